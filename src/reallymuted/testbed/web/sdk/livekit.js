// Glue for livekit-client (comparison SDK). Offline there is no LiveKit server, so no Room:
// the SDK's LocalAudioTrack is driven directly and its audio goes over the page's loopback
// call. Vendor code is reached only through the bundle's global LivekitSdk.
(function () {
  'use strict';
  const {client} = window.LivekitSdk;
  let track = null;

  function state() {
    if (!track) return {};
    const t = track.mediaStreamTrack;
    return {isMuted: track.isMuted, stopOnMute: track.stopOnMute, source: track.source,
      trackId: t ? t.id : null, readyState: t ? t.readyState : null};
  }

  reallymuted.register({
    name: 'livekit',
    modes: ['sdk', 'stop-on-mute'],

    async join(ctx) {
      track = await client.createLocalAudioTrack(
        {echoCancellation: false, noiseSuppression: false, autoGainControl: false});
      // `stopMicTrackOnMute` is a publish option: LocalParticipant.publish() turns it into
      // `track.stopOnMute = true` on the LocalAudioTrack (no constructor or
      // createLocalAudioTrack option takes it). With no Room to publish into, the glue sets
      // the same property publish() would; mute()/unmute() then stop and re-acquire the mic.
      if (ctx.mode === 'stop-on-mute') track.stopOnMute = true;
      const loop = await ctx.sendOverLoopback(track.mediaStreamTrack);
      // What publish() does with the sender it creates: the track keeps it, so that its own
      // restart() on unmute calls sender.replaceTrack(newTrack) (vendor code, not the glue).
      track.sender = loop.sender;
      return {transport: 'page-loopback', media: loop.media,
        audio_level_ext_id: loop.audio_level_ext_id, sdk_state: state()};
    },

    async setMuted(muted, ctx) {
      await (muted ? track.mute() : track.unmute());
      return {sdk_state: state()};
    },

    async leave(ctx) {
      if (track) track.stop();
      return {};
    },

    state,
  });
})();
