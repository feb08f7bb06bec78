# Asterisk 22 from Debian testing (Debian 12 and 13 carry none), with BINfoon's renderer:
# at start `binfoon asterisk run` renders the instance's configuration from asterisk-conf/ and
# dialplan/ (ports, trunk, NAT from the BINFOON_* environment) into the shared volume, then
# becomes Asterisk in the foreground as the package's unprivileged `asterisk` user.
# Everything is installed here, at build time; nothing is installed when a container starts.
FROM debian:testing-slim

# Fixed ids, the same in both images (they share one volume): asterisk 980, binfoon 981.
RUN groupadd --system --gid 980 asterisk \
 && useradd --system --uid 980 --gid 980 --no-create-home --home-dir /var/lib/asterisk --shell /usr/sbin/nologin asterisk \
 && groupadd --system --gid 981 binfoon \
 && useradd --system --uid 981 --gid 981 --groups asterisk --no-create-home --home-dir /var/lib/binfoon \
        --shell /usr/sbin/nologin binfoon

RUN apt-get update \
 && apt-get install -y --no-install-recommends asterisk asterisk-modules python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/binfoon/app
COPY pyproject.toml README.md ./
COPY ivr ./ivr
COPY storage ./storage
COPY asterisk-conf ./asterisk-conf
COPY dialplan ./dialplan
COPY prompts ./prompts
# Editable: the package reads asterisk-conf/ and dialplan/ beside it.
RUN python3 -m venv /opt/binfoon/venv \
 && /opt/binfoon/venv/bin/pip install --no-cache-dir -e /opt/binfoon/app

# No BINFOON_CONFIG: the image ships no binfoon.toml and a named file must exist; docker-compose.yml
# configures both containers by BINFOON_* environment variables (x-binfoon-env), secrets by files.
ENV PATH=/opt/binfoon/venv/bin:$PATH \
    BINFOON_DATA_DIR=/var/lib/binfoon \
    BINFOON_ASTERISK_MODE=system

# Root only to render (files owned by root, readable by the asterisk group) and start; Asterisk
# itself runs as `asterisk` (-U/-G), see AsteriskInstance.command().
ENTRYPOINT ["binfoon", "asterisk", "run", "--name", "default"]
