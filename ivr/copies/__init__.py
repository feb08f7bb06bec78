"""Written copies of a campaign's message: SMS through Kannel, e-mail through an SMTP relay, the members'
replies and opt-outs, and the contact ladder (issue 17). The decisions are ``ivr.domain.channels``."""
