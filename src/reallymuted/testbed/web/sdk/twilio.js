// Glue for twilio-video (comparison SDK). Offline there is no Twilio room, so the SDK's
// LocalAudioTrack is used alone and its MediaStreamTrack goes over the page's loopback call.
// Vendor code is reached only through the bundle's global TwilioSdk.
(function () {
  'use strict';
  const {video} = window.TwilioSdk;
  let track = null;

  function state() {
    if (!track) return {};
    return {isEnabled: track.isEnabled, isStopped: track.isStopped, isStarted: track.isStarted,
      trackId: track.mediaStreamTrack.id, readyState: track.mediaStreamTrack.readyState};
  }

  reallymuted.register({
    name: 'twilio',
    modes: ['sdk'],

    async join(ctx) {
      // The options are MediaTrackConstraints plus Twilio's own (name, logLevel, ...).
      track = await video.createLocalAudioTrack(
        {echoCancellation: false, noiseSuppression: false, autoGainControl: false});
      // Twilio's disable() only flips the track's `enabled` (no sender involved), so the
      // loopback sender needs nothing from the SDK later.
      const loop = await ctx.sendOverLoopback(track.mediaStreamTrack);
      return {transport: 'page-loopback', media: loop.media,
        audio_level_ext_id: loop.audio_level_ext_id, sdk_state: state()};
    },

    async setMuted(muted, ctx) {
      if (muted) track.disable(); else track.enable();
      return {sdk_state: state()};
    },

    async leave(ctx) {
      if (track) track.stop();
      return {};
    },

    state,
  });
})();
