// The webex-2021 profile's microphone meter: an AudioWorklet that reads every sample of the
// microphone (its own audio graph, not the sent track) and turns each 10 ms frame into a
// "gain" on a 0-100 scale.
//
// THE GAIN MODEL (ours, not Webex's code; see reallymuted.telemetry_sessions.frame_gain, which
// computes the same numbers in Python):
//     level_dB = 20 * log10(rms of the frame's samples, as fractions of full scale)
//     gain     = clamp(round(100 + level_dB), 0, 100)           (a silent frame: 0)
// so a full-scale sine (-3 dB) gives 97 and each dB of input moves the gain by one: a
// monotone function of the input level whose range matches the gains in the authors' decoded
// record (PAPER.md T1: roughly 14-97). Per-interval max/mean/min of the frame gains are what
// the profile posts (profile.js).
//
// Frame gains go to the page in batches of BATCH frames (50 ms), each batch with the number
// of frames it holds, so the page can count frames per second (the record's
// captureHardwareProvidedAudioPacketsPerSecond, 100 for 10 ms frames).
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
    this.batch = [];
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
      if (this.count === this.frameLength) {
        this.batch.push(frameGain(Math.sqrt(this.sum / this.count)));
        this.sum = 0;
        this.count = 0;
      }
    }
    if (this.batch.length >= BATCH) {
      this.port.postMessage(this.batch);
      this.batch = [];
    }
    return true;
  }
}

registerProcessor('gain-meter', GainMeter);
