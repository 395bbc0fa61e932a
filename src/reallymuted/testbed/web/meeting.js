// A two-party WebRTC "meeting" in one page, muted the ways real web apps mute (needs
// webrtc-loopback.js loaded first).
//
// The local party captures the microphone with getUserMedia and sends it over an
// RTCPeerConnection to a second RTCPeerConnection in the same page (signalling in-page,
// no STUN/TURN: host candidates on 127.0.0.1 only). The driver (Playwright) calls:
//
//   prepared                  (a promise, started at page load) enumerating devices, which
//                             starts Chromium's audio service before anyone joins
//   join({mode, detector, dtx})  getUserMedia, connect, return the selected candidate pair
//   setMuted(true|false)      mute/unmute with the chosen implementation:
//       soft     track.enabled = false            (mic open, RTP continues with silence)
//       replace  sender.replaceTrack(null)        (mic open, no RTP)
//       stop     track.stop(); unmute = new getUserMedia + replaceTrack
//   leave()                   stop every track, close both connections
//   drainLog()                page events since the last call (epoch ms timestamps)
//
// detector=true adds what "you are muted" features do: an AnalyserNode on a clone of the
// microphone track that stays enabled while muted, logging `detector_speech` when it hears
// speech during mute.
'use strict';

const state = {
  mode: null, detector: false, dtx: false, muted: false,
  stream: null, track: null, clone: null, sender: null, pc1: null, pc2: null,
  audioContext: null, detectorTimer: null, heard: false, log: [],
};

function note(event, fields) {
  state.log.push(Object.assign({ epoch_ms: Date.now(), event: event }, fields || {}));
}

function drainLog() {
  const out = state.log;
  state.log = [];
  return out;
}

async function prepare() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter((d) => d.kind === 'audioinput').length;
}

async function getMic() {
  // Raw capture: no processing that could hide what the microphone delivers.
  return navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    video: false,
  });
}

function withDtx(sdp) {
  return sdp.replace(/useinbandfec=1/g, 'useinbandfec=1;usedtx=1');
}

async function negotiate(pc1, pc2) {
  const offer = await pc1.createOffer();
  if (state.dtx) offer.sdp = withDtx(offer.sdp);
  await pc1.setLocalDescription(offer);
  await pc2.setRemoteDescription(offer);
  const answer = await pc2.createAnswer();
  if (state.dtx) answer.sdp = withDtx(answer.sdp);
  await pc2.setLocalDescription(answer);
  await pc1.setRemoteDescription(answer);
}

function startDetector() {
  state.clone = state.track.clone();
  state.audioContext = new AudioContext();
  const source = state.audioContext.createMediaStreamSource(new MediaStream([state.clone]));
  const analyser = state.audioContext.createAnalyser();
  analyser.fftSize = 2048;
  source.connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let quietSince = 0;
  state.detectorTimer = setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
    const rms = Math.sqrt(sum / buf.length);
    const now = Date.now();
    if (state.muted && rms > 0.01) {
      quietSince = 0;
      if (!state.heard) { state.heard = true; note('detector_speech', { rms: rms }); }
    } else if (state.heard) {
      if (quietSince === 0) quietSince = now;
      if (now - quietSince > 1000 || !state.muted) {
        state.heard = false;
        note('detector_quiet', { rms: rms });
      }
    }
  }, 100);
}

async function join(options) {
  state.mode = options.mode;
  state.detector = Boolean(options.detector);
  state.dtx = Boolean(options.dtx);
  state.stream = await getMic();
  state.track = state.stream.getAudioTracks()[0];
  const config = { iceServers: [] };
  state.pc1 = new RTCPeerConnection(config);
  state.pc2 = new RTCPeerConnection(config);
  state.pc1.onicecandidate = (e) => { if (e.candidate) state.pc2.addIceCandidate(e.candidate); };
  state.pc2.onicecandidate = (e) => { if (e.candidate) state.pc1.addIceCandidate(e.candidate); };
  state.pc2.ontrack = (e) => {
    const el = document.getElementById('remote');
    el.srcObject = e.streams[0] || new MediaStream([e.track]);
    el.play().catch(() => {});
  };
  state.sender = state.pc1.addTrack(state.track, state.stream);
  await negotiate(state.pc1, state.pc2);
  await connected(state.pc1, 10000);
  if (state.detector) startDetector();
  const pair = await selectedPair(state.pc1);
  note('joined', { label: state.track.label });
  return {
    media: pair, track_label: state.track.label,
    audio_level_ext_id: levelExtension(state.pc1.localDescription.sdp),
  };
}

async function setMuted(muted) {
  if (muted === state.muted) return { muted: muted, changed: false };
  if (state.mode === 'soft') {
    state.track.enabled = !muted;
  } else if (state.mode === 'replace') {
    await state.sender.replaceTrack(muted ? null : state.track);
  } else if (state.mode === 'stop') {
    if (muted) {
      await state.sender.replaceTrack(null);
      state.track.stop();
    } else {
      state.stream = await getMic();
      state.track = state.stream.getAudioTracks()[0];
      await state.sender.replaceTrack(state.track);
    }
  } else {
    throw new Error('unknown mute mode ' + state.mode);
  }
  state.muted = muted;
  return { muted: muted, changed: true, track_state: state.track.readyState };
}

async function leave() {
  if (state.detectorTimer !== null) clearInterval(state.detectorTimer);
  for (const t of [state.track, state.clone]) if (t) t.stop();
  if (state.audioContext) await state.audioContext.close();
  for (const pc of [state.pc1, state.pc2]) if (pc) pc.close();
  note('left');
  return {};
}

// Opened by a person rather than Playwright (`reallymuted audit` tests it as a desktop app):
// meeting.html#autojoin&mode=soft&telemetry=/telemetry joins at load, the key m toggles the
// mute like a real app's hotkey, and with `telemetry` the page posts its sender's audio level
// every 2 s, as a web app's quality telemetry does, to that URL of the server it came from.
async function autojoin(params) {
  await join({ mode: params.get('mode') || 'soft' });
  const show = () => { document.title = state.muted ? 'muted' : 'unmuted'; };
  show();
  document.addEventListener('keydown', async (e) => {
    if (e.key === 'm') { await setMuted(!state.muted); show(); }
  });
  const url = params.get('telemetry');
  if (url) {
    setInterval(async () => {
      let level = null;
      (await state.pc1.getStats()).forEach((r) => {
        if (r.type === 'media-source' && r.kind === 'audio') level = r.audioLevel;
      });
      fetch(url, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ epoch_ms: Date.now(), muted: state.muted, audioLevel: level }),
      }).catch(() => {});
    }, 2000);
  }
}

Object.assign(window, { prepare, join, setMuted, leave, drainLog });
window.prepared = prepare();
const pageParams = new URLSearchParams(location.hash.slice(1));
if (pageParams.has('autojoin')) window.prepared.then(() => autojoin(pageParams));
