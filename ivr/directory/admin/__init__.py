"""The admin's tools over the directory: persons (list, show, edit, deactivate, roles, PIN) and zones.

Rules:
- every change is an admin's (or the server's operator's, ``Actor.operator``): anyone else gets an
  ``AdminError`` and nothing is written. The web and the command line check it too; this is the
  check that counts;
- every change is audited with the actor, old and new values (never a PIN, never a full number);
- bad input is an ``AdminError`` whose message says why, and nothing is written;
- a zone asks for a second approver only if it has two active police (one speaks, the other approves);
- the last active admin can be neither deactivated nor lose the admin role (nobody could undo it);
- a person's web account follows their roles and their state: deactivating ends its sessions, a
  role change gives the account the role the directory now gives (or disables it: no role left);
- a reset PIN is made here and handed back once: only its hash is stored, and the audit row says
  that it was reset, not what it is.
These functions run inside the caller's transaction (blocking SQL).

Where: ``checks`` (who may, what exists, names), ``persons``, ``zones``; their public names are
this package's (``admin.edit_zone``), as the web and the command line call them.
"""

from __future__ import annotations

from ivr.directory.admin.checks import BIN_ROLES, MAX_NAME_CHARS, ZONE_ROLES, AdminError, require_admin
from ivr.directory.admin.persons import (
    RESET_PIN_DIGITS,
    PersonDetails,
    PersonRow,
    RoleRow,
    add_role,
    edit_person,
    list_people,
    new_reset_pin,
    person_details,
    remove_role,
    reset_pin,
    set_active,
    unlock_pin,
)
from ivr.directory.admin.zones import (
    SECOND_APPROVER_POLICE,
    UNCHANGED,
    BinRow,
    ZoneDetails,
    ZoneRow,
    edit_zone,
    list_zones,
    set_one_level,
    zone_details,
)

__all__ = [
    "BIN_ROLES", "MAX_NAME_CHARS", "RESET_PIN_DIGITS", "SECOND_APPROVER_POLICE", "UNCHANGED", "ZONE_ROLES",
    "AdminError", "BinRow", "PersonDetails", "PersonRow", "RoleRow", "ZoneDetails", "ZoneRow",
    "add_role", "edit_person", "edit_zone", "list_people", "list_zones", "new_reset_pin", "person_details",
    "remove_role", "require_admin", "reset_pin", "set_active", "set_one_level", "unlock_pin", "zone_details",
]
