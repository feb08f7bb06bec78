# The BINfoon service (FastAGI, web console, dialer, TTS and transcription workers), as the
# unprivileged `binfoon` user. Everything is installed here, at build time.
FROM debian:testing-slim

# Fixed ids, the same in both images (they share one volume): asterisk 980, binfoon 981.
RUN groupadd --system --gid 980 asterisk \
 && useradd --system --uid 980 --gid 980 --no-create-home --home-dir /var/lib/asterisk --shell /usr/sbin/nologin asterisk \
 && groupadd --system --gid 981 binfoon \
 && useradd --system --uid 981 --gid 981 --groups asterisk --no-create-home --home-dir /var/lib/binfoon \
        --shell /usr/sbin/nologin binfoon

# asterisk: only so `binfoon serve --external-asterisk` finds the same Asterisk version and module
# directory as the Asterisk container (it never runs here). espeak-ng, sox, ffmpeg: TTS and audio.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv espeak-ng libespeak-ng1 sox ffmpeg \
        asterisk asterisk-modules \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/binfoon/app
COPY pyproject.toml README.md ./
COPY ivr ./ivr
COPY storage ./storage
COPY asterisk-conf ./asterisk-conf
COPY dialplan ./dialplan
COPY prompts ./prompts
RUN python3 -m venv /opt/binfoon/venv \
 && /opt/binfoon/venv/bin/pip install --no-cache-dir -e /opt/binfoon/app

# The service user is in the asterisk group: the spool (the sounds it writes, the recordings
# Asterisk makes) is shared through that group on the common volume.
RUN mkdir -p /var/lib/binfoon /opt/binfoon/app/prompts/rendered \
 && chown binfoon:binfoon /opt/binfoon/app/prompts/rendered

# No BINFOON_CONFIG: the image ships no binfoon.toml and a named file must exist; docker-compose.yml
# configures both containers by BINFOON_* environment variables (x-binfoon-env), secrets by files.
ENV PATH=/opt/binfoon/venv/bin:$PATH \
    BINFOON_DATA_DIR=/var/lib/binfoon \
    BINFOON_ASTERISK_MODE=system

USER binfoon
ENTRYPOINT ["binfoon", "serve", "--name", "default", "--external-asterisk"]
