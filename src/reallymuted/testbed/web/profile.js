// Testbed profiles: one app's *published* mute behaviour, on top of the meeting page.
//
// A profile is a model of an app, measured for real by the same capture and tracing as any
// client (DESIGN.md, source `testbed-profile`); it is never presented as the app itself.
// meeting.js does the meeting (getUserMedia, the two peer connections) and the mute of the
// sent track; this file adds what each app is published to do on top (PAPER.md M1-M3, T1):
//
//   webex-2021         M1 + T1. Muting stops the sent audio (replaceTrack(null)), but the app
//                      keeps reading the microphone through its own audio graph (a clone of
//                      the track -> AudioWorklet gain-worklet.js, every sample) and every
//                      telemetry interval POSTs a Webex-format `wmequality` record with that
//                      interval's gain statistics (max, mean, min) to the telemetry collector,
//                      muted or not.
//   zoom-native        M2. Muting stops the sent audio (replaceTrack(null)); the microphone
//                      stays open and is looked at only enough to show a local "you are muted"
//                      notice (meeting.js's detector: an AnalyserNode on a clone, polled every
//                      100 ms). Nothing derived from it is sent.
//   native-flags-only  M2 without the notice (Slack, BlueJeans, GoTo Meeting native): muting
//                      stops the sent audio, the microphone stays open, nothing reads it in
//                      the page and nothing is sent.
//   webrtc-soft-mute   M3 (Meet, Jitsi, Whereby, Discord web...): track.enabled = false; RTP
//                      goes on carrying silence, nothing else is sent.
//
// The driver calls profileJoin({profile, telemetry_interval_s, collector_url}),
// profileSetMuted(bool) and profileLeave(); page events go through meeting.js's note():
// telemetry_start, telemetry_sent (one per record, with its frame count and gap_frames: see
// gain-worklet.js), telemetry_error, notice_shown, notice_hidden.
'use strict';

const PROFILES = {
  'webex-2021': { mute: 'replace', detector: false, notice: false, telemetry: true },
  'zoom-native': { mute: 'replace', detector: true, notice: true, telemetry: false },
  'native-flags-only': { mute: 'replace', detector: false, notice: false, telemetry: false },
  'webrtc-soft-mute': { mute: 'soft', detector: false, notice: false, telemetry: false },
};

// The authors' decoded record shows these constant (PAPER.md T1); ours are constant too.
const VOLUME = 27369;
// 1 s of 10-ms frames (gain-worklet.js): the start-up silence of the graph lasts a few frames.
const SILENCE_START_FRAMES = 100;

const profile = {
  name: null, spec: null, intervalMs: 0, collectorUrl: null,
  context: null, clone: null, timer: null, noticeTimer: null,
  origin: 0, intervalStart: 0, number: 0, frames: null, pending: new Set(), posted: 0,
  skipped: 0, startedOn: 'signal',
};

function freshFrames() {
  return { count: 0, sum: 0, max: -1, min: 101, gaps: 0 };
}

function addFrames(gains, gaps) {
  const f = profile.frames;
  for (let i = 0; i < gains.length; i++) {
    const g = gains[i];
    f.count += 1;
    f.sum += g;
    f.gaps += gaps[i];
    if (g > f.max) f.max = g;
    if (g < f.min) f.min = g;
  }
}

async function startTelemetry(options) {
  profile.intervalMs = Number(options.telemetry_interval_s) * 1000;
  profile.collectorUrl = options.collector_url;
  if (!(profile.intervalMs > 0) || !profile.collectorUrl) {
    throw new Error('webex-2021 needs telemetry_interval_s > 0 and collector_url');
  }
  // Its own graph on a clone: whatever happens to the sent track, this one keeps reading.
  profile.clone = state.track.clone();
  profile.context = new AudioContext();
  await profile.context.audioWorklet.addModule('gain-worklet.js');
  const source = profile.context.createMediaStreamSource(new MediaStream([profile.clone]));
  const meter = new AudioWorkletNode(profile.context, 'gain-meter');
  const silent = profile.context.createGain(); // keeps the meter pulled, plays nothing
  silent.gain.value = 0;
  source.connect(meter).connect(silent).connect(profile.context.destination);
  await profile.context.resume();
  profile.frames = freshFrames();
  // The interval clock starts with the first frame that carries signal: the audio graph takes
  // a moment (about 2 s here) to start rendering and then delivers digital silence for a few
  // frames; an interval holding that start-up would not describe the microphone.
  // Later gaps (the graph short of input under load) stay in the statistics, as they would in
  // an app's meter; each record's gap_frames (a page event, not part of the record) says how
  // many frames held one.
  // A microphone that gives nothing but digital silence for SILENCE_START_FRAMES once the graph
  // renders is muted below the app (the OS-level mute, `reallymuted guard`): the clock starts
  // then, so the records describe that silence as an app's meter would post it, instead of
  // never starting (telemetry_start says which).
  meter.port.onmessage = (event) => {
    let { gains, gaps } = event.data;
    if (profile.origin === 0) {
      const first = gains.findIndex((g) => g > 0);
      if (first < 0) {
        profile.skipped += gains.length;
        if (profile.skipped >= SILENCE_START_FRAMES) {
          profile.startedOn = 'silence';
          startClock();
        }
        return;
      }
      gains = gains.slice(first);
      gaps = gaps.slice(first);
      profile.skipped += first;
      startClock();
    }
    addFrames(gains, gaps);
  };
}

function startClock() {
  profile.origin = Date.now();
  profile.intervalStart = profile.origin;
  profile.number = 0;
  scheduleInterval();
  note('telemetry_start', {
    origin_ms: profile.origin, interval_s: profile.intervalMs / 1000,
    collector: profile.collectorUrl, sample_rate: profile.context.sampleRate,
    silent_frames_skipped: profile.skipped, started_on: profile.startedOn,
  });
}

function scheduleInterval() {
  // Boundaries on a fixed grid from the origin, so timer lateness does not accumulate.
  const due = profile.origin + (profile.number + 1) * profile.intervalMs;
  profile.timer = setTimeout(closeInterval, Math.max(0, due - Date.now()));
}

function closeInterval() {
  const end = Date.now();
  const start = profile.intervalStart;
  const frames = profile.frames;
  profile.frames = freshFrames();
  profile.intervalStart = end;
  profile.number += 1;
  const number = profile.number;
  scheduleInterval();
  const sending = postRecord(number, start, end, frames);
  profile.pending.add(sending);
  sending.finally(() => profile.pending.delete(sending));
}

function intervalLevels(frames, seconds) {
  const some = frames.count > 0;
  return {
    packetsPerSecond: Math.round(frames.count / seconds),
    levels: {
      audioMaxGain: some ? frames.max : 0,
      audioMaxVolume: VOLUME,
      audioMeanGain: some ? Math.round(frames.sum / frames.count) : 0,
      audioMeanVolume: VOLUME,
      audioMinGain: some ? frames.min : 0,
      audioMinVolume: VOLUME,
    },
  };
}

// The shape of the authors' decoded record (and of reallymuted.analysis.telemetry.wmequality_payload).
function wmequalityPayload(number, start, end, frames) {
  const { packetsPerSecond, levels } = intervalLevels(frames, (end - start) / 1000);
  const iso = (ms) => new Date(ms).toISOString();
  return {
    event: {
      canProceed: true,
      eventData: { 'MQ-Event-String': 'THIS IS MQ EVENT DATA' },
      identifiers: {},
      intervals: [{
        audioReceive: [],
        audioTransmit: [{
          captureHardwareProvidedAudioPacketsPerSecond: packetsPerSecond,
          common: { common: { direction: 'sendrecv', isMain: true } },
          levels: levels,
          sharedAudioPacketsPerSecond: 0,
          streams: [],
        }],
        intervalMetadata: { peripherals: [{ name: 'microphone' }] },
        intervalNumber: number,
        videoReceive: [],
        videoTransmit: [],
      }],
      name: 'client.mediaquality.event',
      sourceMetadata: {
        applicationSoftwareType: 'reallymuted testbed-profile ' + profile.name,
        endTime: iso(end),
        mediaEngineSoftwareType: 'wme',
        startTime: iso(start),
      },
      trigger: 'media-quality',
    },
    eventId: crypto.randomUUID(),
    origin: { name: 'endpoint', userAgent: 'reallymuted-testbed-profile' },
    originTime: { sent: iso(Date.now()), triggered: iso(end) },
    version: 1,
  };
}

async function gzipBase64(text) {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream('gzip'));
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

async function postRecord(number, start, end, frames) {
  const payload = wmequalityPayload(number, start, end, frames);
  const levels = payload.event.intervals[0].audioTransmit[0].levels;
  const fields = {
    interval: number, start_ms: start, end_ms: end, frames: frames.count, gap_frames: frames.gaps,
    max_gain: levels.audioMaxGain, mean_gain: levels.audioMeanGain,
    min_gain: levels.audioMinGain, muted: state.muted,
  };
  try {
    const blob = await gzipBase64(JSON.stringify(payload));
    const body = JSON.stringify({ telemetrics: [{ t: 'wmequality', v: { gzipb64data: blob } }] });
    const response = await fetch(profile.collectorUrl, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: body,
      credentials: 'omit',
    });
    profile.posted += 1;
    note('telemetry_sent', Object.assign(fields, { bytes: body.length, status: response.status }));
  } catch (error) {
    note('telemetry_error', Object.assign(fields, { error: String(error) }));
  }
}

function startNotice() {
  const element = document.getElementById('muted-notice');
  profile.noticeTimer = setInterval(() => {
    const show = state.muted && state.heard; // the detector heard the user while muted
    if (show === !element.hidden) return;
    element.hidden = !show;
    note(show ? 'notice_shown' : 'notice_hidden', { text: element.textContent });
  }, 100);
}

async function profileJoin(options) {
  const spec = PROFILES[options.profile];
  if (!spec) throw new Error('unknown profile ' + options.profile);
  profile.name = options.profile;
  profile.spec = spec;
  const result = await join({ mode: spec.mute, detector: spec.detector, dtx: false });
  if (spec.telemetry) await startTelemetry(options);
  if (spec.notice) startNotice();
  return Object.assign(result, { profile: profile.name, mute: spec.mute });
}

async function profileSetMuted(muted) {
  return Object.assign(await setMuted(muted), { profile: profile.name });
}

async function profileLeave() {
  if (profile.timer !== null) clearTimeout(profile.timer);
  if (profile.noticeTimer !== null) clearInterval(profile.noticeTimer);
  await Promise.allSettled(Array.from(profile.pending)); // a record in flight still arrives
  if (profile.clone) profile.clone.stop();
  if (profile.context) await profile.context.close();
  return Object.assign(await leave(), { records_posted: profile.posted });
}

Object.assign(window, { profileJoin, profileSetMuted, profileLeave });
