// Glue for Zoom's Video SDK for web (@zoom/videosdk). Joining a session needs Zoom's servers,
// so only the pre-join preview is exercised: the SDK's LocalAudioTrack. Vendor code is reached
// only through the bundle's global ZoomSdk; its wasm and worklets are self-hosted.
(function () {
  'use strict';
  const ZoomVideo = window.ZoomSdk.videosdk.default;
  const ASSETS = new URL('/vendor/zoom-lib', location.href).href;
  let track = null, micTrack = null, requested = null;

  // The preview API exposes no MediaStreamTrack. The SDK's LocalAudioTrack object (2.5.0)
  // keeps its capture in an own property `audioStream` (a MediaStream from its getUserMedia);
  // it is only read here, for the track's state. It is NOT sent anywhere: the preview never
  // transmits, and sending it over the page's loopback call would put the project's RTP, not
  // Zoom's, in the capture (mute() leaves this track untouched, so that RTP would carry speech).
  function sdkMicTrack(t) {
    const s = t && t.audioStream;
    return s instanceof MediaStream ? s.getAudioTracks()[0] || null : null;
  }

  function state() {
    if (!track) return {};
    // The preview track reports no mute state of its own: `muted_requested` is the glue's
    // last call (mute/unmute), the rest is the SDK's meter and the track it holds.
    return {muted_requested: requested, currentVolume: track.getCurrentVolume(),
      trackId: micTrack ? micTrack.id : null, readyState: micTrack ? micTrack.readyState : null};
  }

  reallymuted.register({
    name: 'zoom',
    modes: ['sdk'],

    async join(ctx) {
      // The SDK loads its audio wasm/worklets from this path rather than Zoom's CDN.
      await ZoomVideo.createClient().init('en-US', ASSETS);
      track = ZoomVideo.createLocalAudioTrack();
      await track.start();    // starts capture with the microphone muted (SDK docs)
      await track.unmute();   // the schedule joins unmuted
      requested = false;
      micTrack = sdkMicTrack(track);
      ctx.note('zoom_mic_track', {found: Boolean(micTrack)});
      return {transport: null, media: null, audio_level_ext_id: null, sdk_state: state()};
    },

    async setMuted(m, ctx) {
      await (m ? track.mute() : track.unmute());
      requested = m;
      return {sdk_state: state()};
    },

    async leave(ctx) {
      if (track) await track.stop();
      return {};
    },

    state,
  });
})();
