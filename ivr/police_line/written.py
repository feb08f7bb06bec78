"""Written (typed) messages: how long one may be, and which message one may follow up.

``binfoon message send`` and the console's send form check these before the text is spoken;
the desk (``MessageDesk.submit_text_message``) then takes it the police line's way.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from storage.models import Message

#: A written message longer than this would take minutes to hear on the phone.
MAX_TEXT_CHARS = 2000


def may_follow_up(s: Session, message_id: int, bin_id: int) -> bool:
    """Is ``message_id`` a message of this BIN (an update or cancellation goes to its receivers only)?"""
    first = s.get(Message, message_id)
    return first is not None and first.bin_id == bin_id
