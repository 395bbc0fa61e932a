// Glue for Cisco's Webex web media stack (@webex/media-helpers + @webex/internal-media-core,
// the layers under @webex/plugin-meetings). Vendor code is reached only through the bundle's
// global WebexSdk; this file decides nothing about the microphone itself.
(function () {
  'use strict';
  const {mediaHelpers, internalMediaCore: core} = window.WebexSdk;

  // plugin-meetings' own defaults (config.ts, meetings.stats): analyse every 5 s; network
  // thresholds as shipped. The media-quality (MQE) period is a constant inside StatsAnalyzer
  // (60 s, not configurable), so a short session sees the event emitted at start and the one
  // stopAnalyzer() emits at leave.
  const ANALYZER_INTERVAL_MS = 5000;
  const NQM_CONFIG = {videoPacketLossRatioThreshold: 9, rttThreshold: 500, jitterThreshold: 500};

  let stream = null, conn = null, analyzer = null, answerer = null, offerSdp = null;
  let pending = [];  // telemetry posts in flight, awaited at leave so none is lost
  let left = false;

  // rtcstats patches RTCPeerConnection.prototype.close globally, so it would go on reporting
  // the closing of the page's other peer connections after leave: forward only until then.
  const post = (ctx, kind, body) => { if (!left) pending.push(ctx.post(kind, body).catch(() => {})); };
  const sleep = ms => new Promise(r => setTimeout(r, ms));

  // The far end stands for a media server on 127.0.0.1: both directions of the exchange keep
  // only loopback candidates (when there are any), so ICE can pick no other interface the
  // machine may have (both sides would otherwise also pair on e.g. an fd00:: address).
  function loopbackOnly(sdp) {
    if (!/^a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 /m.test(sdp)) return sdp;
    return sdp.split('\r\n').filter(l => !l.startsWith('a=candidate:') ||
      / 127\.0\.0\.1 \d+ typ host/.test(l)).join('\r\n');
  }

  // Webex answers ROAP from its media server; here a plain local peer answers, with its full
  // candidate list in the SDP because ROAP carries no trickle.
  async function answerOffer(ctx, msg) {
    await answerer.setRemoteDescription({type: 'offer', sdp: loopbackOnly(msg.sdp)});
    await answerer.setLocalDescription(await answerer.createAnswer());
    while (answerer.iceGatheringState !== 'complete') await sleep(50);
    conn.roapMessageReceived({seq: msg.seq, messageType: 'ANSWER',
      sdp: loopbackOnly(answerer.localDescription.sdp)});
  }

  function state() {
    return stream ? {userMuted: stream.userMuted, systemMuted: stream.systemMuted, muted: stream.muted,
      readyState: stream.readyState, label: stream.label,
      connectionState: conn ? conn.getConnectionState() : null} : {};
  }

  reallymuted.register({
    name: 'webex',
    modes: ['sdk'],

    async join(ctx) {
      // Raw capture where the API allows it (AudioDeviceConstraints takes these three).
      stream = await mediaHelpers.createMicrophoneStream(
        {echoCancellation: false, noiseSuppression: false, autoGainControl: false});
      answerer = ctx.peerConnection({iceServers: []});
      const done = new Promise((resolve, reject) => {
        setTimeout(() => reject(new Error('webex: media connection not connected in 15 s')), 15000);
        // The 4th constructor argument is the metrics callback the connection's rtcstats
        // observer calls (a full getStats every 5 s plus peer-connection events); in the
        // product an upper layer batches and uploads these, here each goes to the collector.
        conn = new core.RoapMediaConnection(
          {iceServers: [], skipInactiveTransceivers: false, sdpMunging: {}},
          {localTracks: {audio: stream.outputStream.getAudioTracks()[0]},
            direction: {audio: 'sendrecv', video: 'inactive', screenShareVideo: 'inactive'}},
          'reallymuted', dump => post(ctx, 'rtcstats', dump));
        conn.on(core.MediaConnectionEventNames.ROAP_MESSAGE_TO_SEND, ({roapMessage: m}) => {
          ctx.note('roap_send', {messageType: m.messageType, seq: m.seq});
          if (m.messageType === 'OFFER') { offerSdp = m.sdp; answerOffer(ctx, m).catch(reject); }
        });
        conn.on(core.MediaConnectionEventNames.ROAP_FAILURE, e => reject(e));
        conn.on(core.MediaConnectionEventNames.PEER_CONNECTION_STATE_CHANGED, ({state: s}) => {
          ctx.note('webex_pc_state', {state: s});
          if (s === 'connected') resolve();
          if (s === 'failed') reject(new Error('webex peer connection failed'));
        });
      });
      await conn.initiateOffer();
      await done;

      analyzer = new core.StatsAnalyzer({config: {analyzerInterval: ANALYZER_INTERVAL_MS},
        networkQualityMonitor: new core.NetworkQualityMonitor(NQM_CONFIG),
        statsMonitor: new core.StatsMonitor(), isMultistream: false});
      analyzer.on(core.StatsAnalyzerEventNames.MEDIA_QUALITY, ev => post(ctx, 'mediaquality', ev));
      analyzer.updateMediaStatus({expected: {sendAudio: true, receiveAudio: true}});
      await analyzer.startAnalyzer(conn);

      // The extension id as offered to the far end (the SDP the SDK itself sent over ROAP).
      return {transport: 'sdk', media: await ctx.selectedPair(conn),
        audio_level_ext_id: ctx.levelExtension(offerSdp),
        sdk_state: state()};
    },

    async setMuted(muted, ctx) {
      stream.setUserMuted(muted);  // the SDK's mute: it flips the input track's `enabled`
      // What plugin-meetings tells the analyzer after a mute (sendAudio && !muted): bookkeeping
      // for its media-started/stopped checks only, no track is touched.
      analyzer.updateMediaStatus({expected: {sendAudio: !muted, receiveAudio: true}});
      return {sdk_state: state()};
    },

    async leave(ctx) {
      if (analyzer) await analyzer.stopAnalyzer();  // emits the last media-quality event
      if (conn) conn.close();
      if (answerer) answerer.close();
      if (stream) stream.stop();
      left = true;
      await Promise.all(pending);
      pending = [];
      return {};
    },

    state,
  });
})();
