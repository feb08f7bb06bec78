"""The web console for police, coordinators and admins (issue 7), served by ``binfoon serve``.

``console`` reads the database and acts through the running app; ``routes`` are the pages;
``auth`` the accounts, sign-in and scopes; ``server`` embeds uvicorn in the service's loop.
"""
