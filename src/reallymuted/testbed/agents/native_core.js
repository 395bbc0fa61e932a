// Frida 17 agent core shared by the native agents (wasapi.js on Windows, coreaudio.js on macOS).
//
// reallymuted.testbed.host loads this file followed by one platform binding. Everything here is
// platform-independent (sample statistics, flag decoding, audio-format and GUID parsing, the
// row format and its batching), so tests/test_native_web.py runs it on Linux against buffers
// written into a local process's memory. Only `makeClock` touches platform APIs, and it picks
// the one the platform has.
//
// Messages to the tracer:
//   {type: 'reads', rows: [row, ...]}   batched rows of mic_trace.jsonl (see `row`)
//   {type: 'hook', api, target, ok, error?}          one per hook installed (or refused)
//   {type: 'platform', api, present, platform, reason?}  whether the platform API is here
//   {type: 'note', api, text}                        anything the tracer should log
'use strict';

const FLUSH_ROWS = 200;
const FLUSH_MS = 200;

// A loaded module by file name, case-insensitively (Windows reports KERNEL32.DLL and
// kernel32.dll alike), or null.
function findModule(name) {
  const wanted = name.toLowerCase();
  return Process.enumerateModules().find((m) => m.name.toLowerCase() === wanted) || null;
}

// --- the clock ---------------------------------------------------------------------------
// Rows carry the time of the call on the platform's monotonic clock, in seconds. The tracer
// maps it onto the session clock by calling rpc `clock()` around a reading of its own clock,
// so the agent and the runner need not share a clock API (Windows QPC, macOS mach time).
function makeClock() {
  const platform = Process.platform;
  if (platform === 'windows') {
    const kernel32 = findModule('kernel32.dll');
    const qpc = new NativeFunction(kernel32.getExportByName('QueryPerformanceCounter'),
      'int', ['pointer']);
    const qpf = new NativeFunction(kernel32.getExportByName('QueryPerformanceFrequency'),
      'int', ['pointer']);
    const cell = Memory.alloc(8);
    qpf(cell);
    const frequency = cell.readS64().toNumber();
    return {
      name: 'QueryPerformanceCounter',
      now() { qpc(cell); return cell.readS64().toNumber() / frequency; },
    };
  }
  if (platform === 'darwin') {
    const machTime = new NativeFunction(Module.getGlobalExportByName('mach_absolute_time'),
      'uint64', []);
    const timebase = new NativeFunction(Module.getGlobalExportByName('mach_timebase_info'),
      'int', ['pointer']);
    const info = Memory.alloc(8);
    timebase(info);
    const scale = info.readU32() / info.add(4).readU32() / 1e9;
    return { name: 'mach_absolute_time', now() { return machTime().toNumber() * scale; } };
  }
  const clockGettime = new NativeFunction(Module.getGlobalExportByName('clock_gettime'),
    'int', ['int', 'pointer']);
  const ts = Memory.alloc(16);
  return {
    name: 'CLOCK_MONOTONIC',
    now() {
      clockGettime(1 /* CLOCK_MONOTONIC */, ts);
      return ts.readS64().toNumber() + ts.add(8).readS64().toNumber() / 1e9;
    },
  };
}

const clock = makeClock();

// --- sample statistics -------------------------------------------------------------------
// Layouts of interleaved PCM samples: bytes per sample. `s24` is packed 3-byte little endian.
const SAMPLE_BYTES = { u8: 1, s16: 2, s24: 3, s32: 4, f32: 4, f64: 8 };

// Sum of squares, peak and count of the samples at `p` (fractions of full scale), or null
// when the layout is unknown or there is nothing to measure.
function sampleSums(p, nbytes, layout) {
  if (layout === null || layout === undefined || p.isNull() || !(nbytes > 0)) return null;
  const size = SAMPLE_BYTES[layout];
  const n = Math.floor(nbytes / size);
  if (n === 0) return null;
  const buf = p.readByteArray(n * size);
  let peak = 0;
  let sum = 0;
  function add(v) {
    const m = v < 0 ? -v : v;
    if (m > peak) peak = m;
    sum += v * v;
  }
  switch (layout) {
    case 'u8': { const a = new Uint8Array(buf); for (let i = 0; i < n; i++) add((a[i] - 128) / 128); break; }
    case 's16': { const a = new Int16Array(buf); for (let i = 0; i < n; i++) add(a[i] / 32768); break; }
    case 's24': {
      const a = new Uint8Array(buf);
      for (let i = 0; i < n; i++) {
        const j = 3 * i;
        const raw = ((a[j] | (a[j + 1] << 8) | (a[j + 2] << 16)) << 8) >> 8; // sign-extend
        add(raw / 8388608);
      }
      break;
    }
    case 's32': { const a = new Int32Array(buf); for (let i = 0; i < n; i++) add(a[i] / 2147483648); break; }
    case 'f32': { const a = new Float32Array(buf); for (let i = 0; i < n; i++) add(a[i]); break; }
    case 'f64': { const a = new Float64Array(buf); for (let i = 0; i < n; i++) add(a[i]); break; }
    default: return null;
  }
  return { peak: peak, sum: sum, n: n };
}

// Peak and RMS over several buffers (non-interleaved channels): [peak, rms] or [null, null].
function combineSums(parts) {
  let peak = 0;
  let sum = 0;
  let n = 0;
  for (const s of parts) {
    if (s === null) continue;
    if (s.peak > peak) peak = s.peak;
    sum += s.sum;
    n += s.n;
  }
  return n === 0 ? [null, null] : [peak, Math.sqrt(sum / n)];
}

function levels(p, nbytes, layout) {
  return combineSums([sampleSums(p, nbytes, layout)]);
}

// --- flags -------------------------------------------------------------------------------
// Bit flags to their names, in bit order; bits without a name are kept as hex strings so
// nothing the API said is lost.
function decodeFlags(bits, table) {
  const names = [];
  let rest = bits >>> 0;
  for (const [bit, name] of table) {
    if ((rest & bit) !== 0) {
      names.push(name);
      rest = (rest & ~bit) >>> 0;
    }
  }
  if (rest !== 0) names.push('0x' + rest.toString(16));
  return names;
}

// --- GUIDs (COM) -------------------------------------------------------------------------
function hex(n, width) {
  return n.toString(16).toUpperCase().padStart(width, '0');
}

function readGuid(p) {
  const b = new Uint8Array(p.add(8).readByteArray(8));
  const tail = Array.from(b, (x) => hex(x, 2)).join('');
  return [hex(p.readU32(), 8), hex(p.add(4).readU16(), 4), hex(p.add(6).readU16(), 4),
    tail.slice(0, 4), tail.slice(4)].join('-');
}

function writeGuid(p, text) {
  const parts = text.split('-');
  p.writeU32(parseInt(parts[0], 16));
  p.add(4).writeU16(parseInt(parts[1], 16));
  p.add(6).writeU16(parseInt(parts[2], 16));
  const tail = parts[3] + parts[4];
  for (let i = 0; i < 8; i++) p.add(8 + i).writeU8(parseInt(tail.slice(2 * i, 2 * i + 2), 16));
  return p;
}

function guidEquals(p, text) {
  return !p.isNull() && readGuid(p) === text.toUpperCase();
}

function allocGuid(text) {
  return writeGuid(Memory.alloc(16), text);
}

// --- audio formats -----------------------------------------------------------------------
const WAVE_FORMAT_PCM = 1;
const WAVE_FORMAT_IEEE_FLOAT = 3;
const WAVE_FORMAT_EXTENSIBLE = 0xFFFE;
const KSDATAFORMAT_SUBTYPE_PCM = '00000001-0000-0010-8000-00AA00389B71';
const KSDATAFORMAT_SUBTYPE_IEEE_FLOAT = '00000003-0000-0010-8000-00AA00389B71';

// WAVEFORMATEX (optionally WAVEFORMATEXTENSIBLE) at `p` -> what is needed to measure samples.
// Offsets: wFormatTag 0, nChannels 2, nSamplesPerSec 4, nAvgBytesPerSec 8, nBlockAlign 12,
// wBitsPerSample 14, cbSize 16; extensible: wValidBitsPerSample 18, dwChannelMask 20,
// SubFormat 24.
function parseWaveFormat(p) {
  if (p.isNull()) return null;
  const tag = p.readU16();
  const format = {
    tag: tag,
    channels: p.add(2).readU16(),
    rate: p.add(4).readU32(),
    blockAlign: p.add(12).readU16(),
    bits: p.add(14).readU16(),
    validBits: null,
    subformat: null,
    layout: null,
  };
  let isFloat = tag === WAVE_FORMAT_IEEE_FLOAT;
  let isPcm = tag === WAVE_FORMAT_PCM;
  if (tag === WAVE_FORMAT_EXTENSIBLE && p.add(16).readU16() >= 22) {
    format.validBits = p.add(18).readU16();
    format.subformat = readGuid(p.add(24));
    isFloat = format.subformat === KSDATAFORMAT_SUBTYPE_IEEE_FLOAT;
    isPcm = format.subformat === KSDATAFORMAT_SUBTYPE_PCM;
  }
  const container = format.channels ? (format.blockAlign / format.channels) * 8 : 0;
  if (isFloat && container === 32) format.layout = 'f32';
  else if (isFloat && container === 64) format.layout = 'f64';
  else if (isPcm && container === 8) format.layout = 'u8';
  else if (isPcm && container === 16) format.layout = 's16';
  else if (isPcm && container === 24) format.layout = 's24';
  else if (isPcm && container === 32) format.layout = 's32';
  return format;
}

// AudioStreamBasicDescription at `p`: mSampleRate f64 0, mFormatID 8, mFormatFlags 12,
// mBytesPerPacket 16, mFramesPerPacket 20, mBytesPerFrame 24, mChannelsPerFrame 28,
// mBitsPerChannel 32 (40 bytes with mReserved).
const kAudioFormatLinearPCM = 0x6C70636D; // 'lpcm'
const kAudioFormatFlagIsFloat = 1;
const kAudioFormatFlagIsSignedInteger = 4;
const kAudioFormatFlagIsNonInterleaved = 32;

function fourcc(n) {
  return String.fromCharCode((n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);
}

function parseASBD(p) {
  if (p.isNull()) return null;
  const id = p.add(8).readU32();
  const flags = p.add(12).readU32();
  const format = {
    rate: p.readDouble(),
    formatID: fourcc(id),
    flags: flags,
    bytesPerFrame: p.add(24).readU32(),
    channels: p.add(28).readU32(),
    bits: p.add(32).readU32(),
    interleaved: (flags & kAudioFormatFlagIsNonInterleaved) === 0,
    layout: null,
  };
  if (id !== kAudioFormatLinearPCM) return format;
  // Bytes per sample in its container: per frame, divided among the channels when interleaved.
  const perSample = format.interleaved && format.channels
    ? format.bytesPerFrame / format.channels : format.bytesPerFrame;
  if (flags & kAudioFormatFlagIsFloat) {
    format.layout = perSample === 4 ? 'f32' : perSample === 8 ? 'f64' : null;
  } else if (flags & kAudioFormatFlagIsSignedInteger) {
    format.layout = { 2: 's16', 3: 's24', 4: 's32' }[perSample] || null;
  } else if (perSample === 1) {
    format.layout = 'u8';
  }
  return format;
}

// AudioBufferList {UInt32 mNumberBuffers; AudioBuffer mBuffers[]} with AudioBuffer
// {UInt32 mNumberChannels; UInt32 mDataByteSize; void *mData}: the buffers start at the
// pointer alignment, and each is two UInt32 then a pointer.
function readBufferList(abl) {
  if (abl.isNull()) return [];
  const count = abl.readU32();
  const first = Process.pointerSize;
  const stride = 8 + Process.pointerSize;
  const buffers = [];
  for (let i = 0; i < count && i < 64; i++) {
    const b = abl.add(first + i * stride);
    buffers.push({ channels: b.readU32(), bytes: b.add(4).readU32(), data: b.add(8).readPointer() });
  }
  return buffers;
}

// Peak/RMS and sizes of the samples in an AudioBufferList in `format` (parseASBD).
function bufferListLevels(abl, format) {
  const buffers = readBufferList(abl);
  const layout = format === null ? 'f32' : format.layout;
  let bytes = 0;
  const parts = [];
  for (const b of buffers) {
    bytes += b.bytes;
    parts.push(sampleSums(b.data, b.bytes, layout));
  }
  let frames = null;
  if (format !== null && format.bytesPerFrame > 0 && buffers.length > 0) {
    frames = Math.floor(buffers[0].bytes / format.bytesPerFrame);
  }
  const lv = combineSums(parts);
  return { buffers: buffers.length, bytes: bytes, frames: frames, peak: lv[0], rms: lv[1] };
}

// --- rows and batching -------------------------------------------------------------------
// One line of mic_trace.jsonl (the tracer adds pid and maps t onto the session clock):
//   kind 'read': the app received microphone samples (frames, bytes, peak, rms; flags and
//                silent where the API reports them);
//   kind 'call': any other call on the capture path (Start, Stop, ReleaseBuffer, ...).
let rows = [];
const counts = {};

function row(api, kind, t, tid, fields) {
  const r = {
    t: t, api: api, kind: kind, tid: tid,
    frames: null, bytes: null, peak: null, rms: null,
  };
  for (const k in fields) r[k] = fields[k];
  return r;
}

function emit(r) {
  rows.push(r);
  counts[r.api] = (counts[r.api] || 0) + 1;
  if (rows.length >= FLUSH_ROWS) flush();
}

function flush() {
  if (rows.length === 0) return;
  const batch = rows;
  rows = [];
  send({ type: 'reads', pid: Process.id, rows: batch });
}

function takeRows() {
  const batch = rows;
  rows = [];
  return batch;
}

// Hooks: each function address is attached once, whatever object led us to it.
const hooked = new Map(); // address string -> target name

function hook(api, target, address, callbacks) {
  if (address === null || address.isNull()) {
    send({ type: 'hook', api: api, target: target, ok: false, error: 'no address' });
    return false;
  }
  const key = address.toString();
  if (hooked.has(key)) return true;
  hooked.set(key, target);
  try {
    Interceptor.attach(address, callbacks);
    send({ type: 'hook', api: api, target: target, ok: true, address: key });
    return true;
  } catch (e) {
    send({ type: 'hook', api: api, target: target, ok: false, error: String(e) });
    return false;
  }
}

// The slot `index` of the vtable of COM-style object `obj` (first word = vtable pointer).
function vtableSlot(obj, index) {
  return obj.readPointer().add(index * Process.pointerSize).readPointer();
}

function reportPlatform(api, present, reason) {
  const message = { type: 'platform', api: api, present: present, platform: Process.platform };
  if (reason) message.reason = reason;
  send(message);
}

setInterval(flush, FLUSH_MS);

rpc.exports = {
  // The tracer calls this between two readings of its own clock to map agent time.
  clock() { return { t: clock.now(), name: clock.name }; },
  // Called before detaching, so no buffered row is lost.
  flush() { return takeRows(); },
  counts() { return counts; },
  hooks() { return Array.from(hooked.values()); },
};
