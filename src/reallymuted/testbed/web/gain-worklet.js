// The webex-2021 profile's microphone meter: an AudioWorklet that reads every sample of the
// microphone (its own audio graph, not the sent track) and turns each 10 ms frame into a
// "gain" on a 0-100 scale.
//
// THE GAIN MODEL (ours, not Webex's code; see reallymuted.analysis.telemetry.sessions.frame_gain, which
// computes the same numbers in Python):
//     level_dB = 20 * log10(rms of the frame's samples, as fractions of full scale)
//     gain     = clamp(round(100 + level_dB), 0, 100)           (a silent frame: 0)
// so a full-scale sine (-3 dB) gives 97 and each dB of input moves the gain by one: a
// monotone function of the input level whose range matches the gains in the authors' decoded
// record (PAPER.md T1: roughly 14-97). Per-interval max/mean/min of the frame gains are what
// the profile posts (profile.js).
//
// Frame gains go to the page in batches of BATCH frames (50 ms), so the page can count frames
// per second (the record's captureHardwareProvidedAudioPacketsPerSecond, 100 for 10 ms
// frames). With each frame goes whether it holds a gap: at least 1 ms of samples that are
// exactly zero on every channel. A microphone fed a recording never gives that (the
// activity stimuli hold no such run); the audio graph does when it starts or runs short of
// input under load, and the frame's gain then describes the graph, not the microphone. The
// page reports the count beside each record (never in it), so the analysis can tell the two
// apart (reallymuted.analysis.attack).
'use strict';

const BATCH = 5;

function frameGain(rms) {
  if (!(rms > 0)) return 0;
  const gain = Math.round(100 + 20 * Math.log10(rms));
  return Math.min(100, Math.max(0, gain));
}

class GainMeter extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frameLength = Math.round(sampleRate / 100); // 10 ms
    this.sum = 0;
    this.count = 0;
    this.gapLength = Math.round(sampleRate / 1000); // 1 ms
    this.zeroRun = 0;
    this.frameHasGap = false;
    this.batch = [];
    this.gaps = [];
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true; // nothing connected (yet)
    const channels = input.length;
    const length = input[0].length;
    for (let i = 0; i < length; i++) {
      let square = 0;
      for (let c = 0; c < channels; c++) square += input[c][i] * input[c][i];
      this.sum += square / channels;
      this.count += 1;
      // a frame holds a gap if a zero run is at least 1 ms long at one of its samples (the run
      // may have started in the frame before)
      this.zeroRun = square === 0 ? this.zeroRun + 1 : 0;
      if (this.zeroRun >= this.gapLength) this.frameHasGap = true;
      if (this.count === this.frameLength) {
        this.batch.push(frameGain(Math.sqrt(this.sum / this.count)));
        this.gaps.push(this.frameHasGap ? 1 : 0);
        this.sum = 0;
        this.count = 0;
        this.frameHasGap = false;
      }
    }
    if (this.batch.length >= BATCH) {
      this.port.postMessage({ gains: this.batch, gaps: this.gaps });
      this.batch = [];
      this.gaps = [];
    }
    return true;
  }
}

registerProcessor('gain-meter', GainMeter);
