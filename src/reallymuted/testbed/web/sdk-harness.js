// The harness of the `sdk` sessions: a vendor's own client library, unchanged, on a local page.
//
// Loaded before anything else on sdk.html, it keeps the page's microphone use in view without
// changing it, and keeps every request on the machine:
//
//   * every getUserMedia call, every audio track it returned (and clones), every assignment to
//     a track's `enabled`, every `stop()` and every `RTCRtpSender.replaceTrack` is logged with
//     the script that made it: the first stack frame outside this file, e.g. /vendor/webex.js
//     (the vendor's bundle) or /sdk/webex.js (the project's glue). The driver fails a session
//     whose mute was done by the page rather than by the vendor's code;
//   * each audio track's state (enabled, muted, readyState) is sampled every 100 ms and logged
//     when it changes;
//   * fetch, XMLHttpRequest, sendBeacon and WebSocket calls to anything but this page's own
//     server are logged and sent to the session's collector instead (`/intercepted/...`), so
//     the collector holds what the vendor's code tried to send, and nothing leaves loopback.
//
// The glue of one SDK (/sdk/NAME.js) registers itself with reallymuted.register({name, modes,
// join, setMuted, leave, state}); the driver calls sdkJoin, sdkSetMuted, sdkLeave and drainLog.
'use strict';

(() => {
  Error.stackTraceLimit = 60;
  const params = new URLSearchParams(location.search);
  const collector = 'http://127.0.0.1:' + (params.get('collector') || '8090');
  const log = [];
  let call = null; // the driver's call in progress: join, mute, unmute, leave
  let plumbing = false; // the harness moving a new track onto its loopback sender
  let client = null;
  const tracks = []; // every audio track the page obtained, in order
  const states = new Map(); // track -> last logged state
  const trackIds = new WeakMap(); // track -> short id (a1, a2, ...) stable across the log
  let named = 0;
  const pcs = [];
  let loopback = null;

  function note(event, fields) {
    log.push(Object.assign({ epoch_ms: Date.now(), event: event, call: call }, fields || {}));
  }

  // The script that called into the wrapped API: the first frame not in this file.
  const HERE = new URL(document.currentScript.src).pathname;
  function caller() {
    const stack = (new Error().stack || '').split('\n').slice(1);
    for (const line of stack) {
      const m = /(https?:\/\/[^\s()]+?):\d+:\d+\)?\s*$/.exec(line);
      if (!m) continue;
      const path = new URL(m[1]).pathname;
      if (path !== HERE) return path;
    }
    return 'native';
  }

  function idOf(track) {
    if (!trackIds.has(track)) trackIds.set(track, 'a' + (named += 1));
    return trackIds.get(track);
  }

  function stateOf(track) {
    return { enabled: track.enabled, muted: track.muted, readyState: track.readyState };
  }

  function adopt(track, how, from) {
    if (track.kind !== 'audio' || tracks.includes(track)) return;
    const id = idOf(track);
    tracks.push(track);
    states.set(track, JSON.stringify(stateOf(track)));
    for (const type of ['ended', 'mute', 'unmute']) {
      track.addEventListener(type, () => note('track_event', { track: id, type: type }));
    }
    note('track_opened', Object.assign({ track: id, how: how, label: track.label,
      settings: track.getSettings() }, from || {}));
  }

  // -- the microphone ------------------------------------------------------------------
  const md = navigator.mediaDevices;
  const gum = md.getUserMedia.bind(md);
  md.getUserMedia = async function (constraints) {
    const by = caller();
    note('gum', { constraints: constraints, caller: by });
    const stream = await gum(constraints);
    for (const t of stream.getAudioTracks()) adopt(t, 'getUserMedia', { caller: by });
    return stream;
  };
  const Track = MediaStreamTrack.prototype;
  const enabled = Object.getOwnPropertyDescriptor(Track, 'enabled');
  Object.defineProperty(Track, 'enabled', {
    configurable: true,
    enumerable: enabled.enumerable,
    get: enabled.get,
    set(value) {
      if (this.kind === 'audio') {
        note('track_enabled', { track: idOf(this), value: Boolean(value),
          previous: enabled.get.call(this), caller: caller() });
      }
      enabled.set.call(this, value);
    },
  });
  const stop = Track.stop;
  Track.stop = function () {
    if (this.kind === 'audio') note('track_stop', { track: idOf(this), caller: caller() });
    return stop.call(this);
  };
  const clone = Track.clone;
  Track.clone = function () {
    const copy = clone.call(this);
    adopt(copy, 'clone', { of: idOf(this), caller: caller() });
    return copy;
  };
  const replaceTrack = RTCRtpSender.prototype.replaceTrack;
  RTCRtpSender.prototype.replaceTrack = function (track) {
    if (!this.track || this.track.kind === 'audio' || (track && track.kind === 'audio')) {
      note('replace_track', { from: this.track ? idOf(this.track) : null,
        to: track ? idOf(track) : null, caller: caller(), plumbing: plumbing });
    }
    return replaceTrack.call(this, track);
  };
  setInterval(() => {
    for (const t of tracks) {
      const now = JSON.stringify(stateOf(t));
      if (now !== states.get(t)) {
        states.set(t, now);
        note('track_state', Object.assign({ track: idOf(t) }, stateOf(t)));
      }
    }
  }, 100);

  // -- the network: nothing but loopback -------------------------------------------------
  function ownOrigin(url) {
    return url.origin === location.origin || url.origin === collector;
  }
  function intercepted(kind, url) {
    return collector + '/intercepted/' + kind + '?url=' + encodeURIComponent(url.href);
  }
  const fetchNative = window.fetch.bind(window);
  window.fetch = function (input, init) {
    const url = new URL(input instanceof Request ? input.url : String(input), location.href);
    if (ownOrigin(url)) return fetchNative(input, init);
    const method = (init && init.method) || (input instanceof Request ? input.method : 'GET');
    note('request', { kind: 'fetch', url: url.href, method: method, caller: caller() });
    const body = init && init.body !== undefined ? init.body : undefined;
    return fetchNative(intercepted('fetch', url), { method: 'POST', body: body });
  };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, target, ...rest) {
    const url = new URL(String(target), location.href);
    if (ownOrigin(url)) return open.call(this, method, target, ...rest);
    note('request', { kind: 'xhr', url: url.href, method: method, caller: caller() });
    return open.call(this, 'POST', intercepted('xhr', url), ...rest);
  };
  const beacon = navigator.sendBeacon.bind(navigator);
  navigator.sendBeacon = function (target, data) {
    const url = new URL(String(target), location.href);
    if (ownOrigin(url)) return beacon(target, data);
    note('request', { kind: 'beacon', url: url.href, method: 'POST', caller: caller() });
    return beacon(intercepted('beacon', url), data);
  };
  const NativeSocket = window.WebSocket;
  window.WebSocket = function (target, protocols) {
    const url = new URL(String(target), location.href);
    note('request', { kind: 'websocket', url: url.href, method: 'GET', caller: caller() });
    // The collector answers a plain HTTP request: the socket fails as it would offline.
    return new NativeSocket(intercepted('websocket', url).replace(/^http/, 'ws'), protocols);
  };
  Object.assign(window.WebSocket, NativeSocket);
  window.WebSocket.prototype = NativeSocket.prototype;

  // -- what the glue gets ------------------------------------------------------------------
  // connected, selectedPair, levelExtension: webrtc-loopback.js

  function peerConnection(config) {
    const pc = new RTCPeerConnection(config || { iceServers: [] });
    pcs.push(pc);
    return pc;
  }

  // For an SDK with no transport of its own offline: the page's two-party loopback call.
  async function sendOverLoopback(track) {
    const pc1 = peerConnection();
    const pc2 = peerConnection();
    // Loopback candidates only: on a machine with other interfaces ICE could pair on them,
    // and the media would not say 127.0.0.1 (in the session's namespace there is only lo).
    const local = (c) => c && c.address === '127.0.0.1';
    pc1.onicecandidate = (e) => { if (local(e.candidate)) pc2.addIceCandidate(e.candidate); };
    pc2.onicecandidate = (e) => { if (local(e.candidate)) pc1.addIceCandidate(e.candidate); };
    pc2.ontrack = (e) => {
      const el = document.getElementById('remote');
      el.srcObject = e.streams[0] || new MediaStream([e.track]);
      el.play().catch(() => {});
    };
    const sender = pc1.addTrack(track, new MediaStream([track]));
    const offer = await pc1.createOffer();
    await pc1.setLocalDescription(offer);
    await pc2.setRemoteDescription(offer);
    const answer = await pc2.createAnswer();
    await pc2.setLocalDescription(answer);
    await pc1.setRemoteDescription(answer);
    await connected(pc1, 10000);
    loopback = { pc1: pc1, pc2: pc2, sender: sender };
    return {
      media: await selectedPair(pc1),
      audio_level_ext_id: levelExtension(pc1.localDescription.sdp),
      sender: sender,
    };
  }

  // Only for an SDK that re-acquires the microphone but cannot reach the page's sender itself:
  // logged as plumbing, so it does not count as the SDK's (or the page's) mute.
  function replaceLoopbackTrack(track) {
    plumbing = true;
    try {
      return loopback.sender.replaceTrack(track);
    } finally {
      plumbing = false;
    }
  }

  async function post(kind, body) {
    note('telemetry_post', { kind: kind });
    const response = await fetchNative(collector + '/sdk/' + kind, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return response.status;
  }

  function context(mode) {
    return {
      mode: mode, note: note, post: post, peerConnection: peerConnection,
      sendOverLoopback: sendOverLoopback, replaceLoopbackTrack: replaceLoopbackTrack,
      selectedPair: selectedPair, levelExtension: levelExtension,
    };
  }

  // -- the driver's calls ------------------------------------------------------------------
  let ctx = null;

  function register(glue) {
    client = glue;
    note('sdk_registered', { name: glue.name, modes: glue.modes });
  }

  function load(src) {
    return new Promise((resolve, reject) => {
      const el = document.createElement('script');
      el.src = src;
      el.onload = resolve;
      el.onerror = () => reject(new Error('cannot load ' + src));
      document.body.appendChild(el);
    });
  }

  async function loadSdk(name) {
    window.prepared = (async () => {
      if (!/^[a-z0-9-]+$/.test(name || '')) throw new Error('bad sdk name ' + name);
      await load('/vendor/' + name + '.js');
      await load('/sdk/' + name + '.js');
      if (client === null || client.name !== name) throw new Error(name + ': glue not registered');
      // Enumerating devices starts Chromium's audio service before anyone joins.
      const devices = await navigator.mediaDevices.enumerateDevices();
      return devices.filter((d) => d.kind === 'audioinput').length;
    })();
  }

  // The track operations made during the call that starts at log index `from`.
  function operations(from) {
    return log.slice(from).filter((e) => ['track_enabled', 'track_stop', 'replace_track', 'gum']
      .includes(e.event) && e.call === call);
  }

  async function during(name, work) {
    call = name;
    const from = log.length;
    try {
      const result = await work();
      // Effects the SDK defers to a microtask or timer still belong to its call.
      await new Promise((resolve) => setTimeout(resolve, 50));
      return Object.assign({}, result || {}, {
        operations: operations(from).map((e) => ({
          event: e.event, track: e.track || null, value: e.value === undefined ? null : e.value,
          from: e.from === undefined ? null : e.from, to: e.to === undefined ? null : e.to,
          caller: e.caller, plumbing: Boolean(e.plumbing),
        })),
        sdk_state: client.state(),
        tracks: tracks.map((t) => Object.assign({ track: idOf(t) }, stateOf(t))),
      });
    } finally {
      call = null;
    }
  }

  async function sdkJoin(options) {
    if (!client.modes.includes(options.mode)) throw new Error('mode ' + options.mode);
    ctx = context(options.mode);
    const result = await during('join', () => client.join(ctx));
    note('joined', { transport: result.transport || null });
    return result;
  }

  async function sdkSetMuted(muted) {
    const result = await during(muted ? 'mute' : 'unmute', () => client.setMuted(muted, ctx));
    return Object.assign(result, { muted: muted });
  }

  async function sdkLeave() {
    const result = await during('leave', () => client.leave(ctx));
    for (const t of tracks) if (t.readyState === 'live') stop.call(t); // nothing left open
    for (const pc of pcs) pc.close();
    note('left');
    return result;
  }

  function drainLog() {
    return log.splice(0, log.length);
  }

  window.reallymuted = { register: register, loadSdk: loadSdk };
  Object.assign(window, { sdkJoin, sdkSetMuted, sdkLeave, drainLog });
})();
