// What every local meeting page needs of its loopback WebRTC call (meeting.js, the profiles'
// page on top of it, and the sdk pages' harness): wait for the connection, read the selected
// candidate pair, find the negotiated RFC 6464 audio-level extension.
'use strict';

function connected(pc, timeoutMs) {
  return new Promise((resolve, reject) => {
    if (pc.connectionState === 'connected') { resolve(); return; }
    const timer = setTimeout(() => reject(new Error('not connected: ' + pc.connectionState)),
      timeoutMs);
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected') { clearTimeout(timer); resolve(); }
      if (pc.connectionState === 'failed') { clearTimeout(timer); reject(new Error('failed')); }
    });
  });
}

// The nominated, succeeded candidate pair of `pc` (anything with getStats()), as
// {local, remote, protocol}; null if ICE has chosen none within `waitMs`. Stats can lag the
// connection state by a moment: a pair asked for just after "connected" may not be there yet
// (seen once in CI: a Webex library session failed its join for it).
async function selectedPair(pc, waitMs = 3000) {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const found = await currentPair(pc);
    if (found !== null || Date.now() > deadline) return found;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function currentPair(pc) {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
  });
  if (pair === null) return null;
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  return {
    local: local.address + ':' + local.port,
    remote: remote.address + ':' + remote.port,
    protocol: local.protocol,
  };
}

// The RFC 6464 audio level header extension id negotiated in `sdp` (the level is sent in
// clear), or null.
function levelExtension(sdp) {
  const m = /a=extmap:(\d+)(?:\/\w+)? urn:ietf:params:rtp-hdrext:ssrc-audio-level/.exec(sdp || '');
  return m ? Number(m[1]) : null;
}
