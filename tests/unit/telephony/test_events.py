"""Typed events from AMI messages (as panoramisk parses them from the wire)."""

from panoramisk.message import Message

from ivr.telephony.events import ChannelHungUp, DtmfReceived, FullyBooted, UserEventReceived, parse_event


def _msg(text: str) -> Message:
    message = Message.from_line(text.replace("\n", "\r\n"))
    assert message is not None
    return message


def test_hangup() -> None:
    event = parse_event(_msg(
        "Event: Hangup\nPrivilege: call,all\nChannel: Local/+3291000004@sim-phone-00000003;1\n"
        "Uniqueid: 4a56dee0-d27a-4e4a-a233-0bfa8663b449\nCause: 19\nCause-txt: No answer"
    ))
    assert event == ChannelHungUp("4a56dee0-d27a-4e4a-a233-0bfa8663b449",
                                  "Local/+3291000004@sim-phone-00000003;1", 19, "No answer")


def test_dtmf_and_header_case() -> None:
    event = parse_event(_msg(
        "Event: DTMFEnd\nchannel: PJSIP/trunk-00000001\nuniqueid: abc\ndigit: 1\ndurationms: 120\n"
        "direction: Received"
    ))
    assert event == DtmfReceived("abc", "PJSIP/trunk-00000001", "1", "Received", 120)


def test_user_event_keeps_its_fields() -> None:
    event = parse_event(_msg("Event: UserEvent\nUserEvent: BinfoonAgiFailed\nUniqueid: u1\nAttempt: a-17"))
    assert isinstance(event, UserEventReceived)
    assert event.name == "BinfoonAgiFailed" and event.channel_id == "u1" and event.fields["Attempt"] == "a-17"


def test_fully_booted_and_unused_events() -> None:
    assert parse_event(_msg("Event: FullyBooted\nPrivilege: system,all\nStatus: Fully Booted")) == FullyBooted()
    assert parse_event(_msg("Event: Newchannel\nChannel: X")) is None


def test_bad_numbers_do_not_raise() -> None:
    event = parse_event(_msg("Event: Hangup\nUniqueid: u\nCause: \nChannel: X"))
    assert isinstance(event, ChannelHungUp) and event.cause == 0


def test_registry_is_the_trunks_registration_state() -> None:
    from ivr.telephony.events import TrunkRegistration

    event = parse_event(_msg(
        "Event: Registry\nPrivilege: system,all\nChannelType: PJSIP\nUsername: sip:binfoon@127.0.0.1:5070\n"
        "Domain: sip:127.0.0.1:5070\nStatus: Rejected\nCause: 403 Forbidden"
    ))
    assert event == TrunkRegistration("sip:127.0.0.1:5070", "sip:binfoon@127.0.0.1:5070", "Rejected", "403 Forbidden")
    assert not event.registered
    assert parse_event(_msg("Event: Registry\nStatus: Registered")).registered  # type: ignore[union-attr]
