"""Offline speech recognition (Vosk) for the recordings.

Rules: a model is loaded only from a local folder (never downloaded at run time by Vosk itself);
recognition is CPU work and runs in worker processes (``pool``), never on the event loop; without
a model, recordings are kept untranscribed and transcribed later (``desk``).
"""
