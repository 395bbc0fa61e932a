// Glue for Whereby's browser SDK layers (@whereby.com/core local media, @whereby.com/media).
// Joining a room needs Whereby's servers, so only the SDK's local media is used and its audio
// track goes over the page's loopback call. Vendor code is reached only through WherebySdk.
(function () {
  'use strict';
  const {core, media} = window.WherebySdk;
  const SCORE_EVERY_MS = 500;
  let client = null, local = null, analyser = null, lastScoreAt = 0;

  function state() {
    if (!local) return {};
    const s = local.getState();
    const t = s.localStream && s.localStream.getAudioTracks()[0];
    return {isMicrophoneEnabled: s.isMicrophoneEnabled, isStarting: s.isStarting,
      trackId: t ? t.id : null, readyState: t ? t.readyState : null};
  }

  reallymuted.register({
    name: 'whereby',
    modes: ['sdk', 'analyser'],

    async join(ctx) {
      client = new core.WherebyClient();
      local = client.getLocalMedia();
      await local.startMedia({audio: true, video: false});
      const stream = local.getState().localStream;
      if (!stream) throw new Error('whereby: startMedia gave no stream');
      const micTrack = stream.getAudioTracks()[0];
      if (ctx.mode === 'analyser') {
        // What VegaRtcManager runs when the server flags co-located participants: the
        // SDK's own analyser, with its default params (it opens its own AGC-off track).
        analyser = media.createMicAnalyser({micTrack, onScoreUpdated: (data) => {
          const now = Date.now();
          if (now - lastScoreAt < SCORE_EVERY_MS) return;  // it reports 5 times a second
          lastScoreAt = now;
          ctx.note('mic_score', {score: data.out});  // `out`: the value Whereby would send
        }});
      }
      const loop = await ctx.sendOverLoopback(micTrack);
      return {transport: 'page-loopback', media: loop.media,
        audio_level_ext_id: loop.audio_level_ext_id, sdk_state: state()};
    },

    async setMuted(muted, ctx) {
      local.toggleMicrophone(!muted);  // the SDK's mute: it sets the track's `enabled`
      return {sdk_state: state()};
    },

    async leave(ctx) {
      if (analyser) { analyser.close(); analyser = null; }
      if (local) local.stopMedia();
      if (client) client.destroy();
      return {};
    },

    state,
  });
})();
