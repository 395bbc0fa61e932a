"""``reallymuted guard``: the operating-system mute the paper recommends, for one app.

The app's capture streams are muted at the person's sound server (PulseAudio, or PipeWire
through pipewire-pulse) while the person is muted, so whatever the app reads then is digital
silence; on unmute the streams are let through again. The guard follows the app's new streams
and its child processes, keeps a status file (the microphone indicator the paper asks for),
and is driven through a local socket that only its user and root may use (:mod:`.control`).

* :mod:`.streams`: the app's streams on the sound server, and muting them;
* :mod:`.service`: the guard's loop (sound-server events, control requests, status);
* :mod:`.control`: the socket protocol, its credential check and the client.

See docs/guard.md for what it does and does not protect against.
"""
