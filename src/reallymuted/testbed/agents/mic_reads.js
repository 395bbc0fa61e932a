// Frida 17 agent: report every microphone read an app makes through PulseAudio, ALSA or PipeWire.
//
// Loaded by reallymuted.testbed.tracing into each process of a client's tree. For every read that
// returned samples it records the monotonic time (CLOCK_MONOTONIC, the session's clock), the
// API, the thread, the size and the peak/RMS of the samples the app actually received.
// A read made *inside* another hooked read on the same thread (pa_simple_read calling
// pa_stream_peek, the ALSA pulse plugin calling pa_stream_peek under snd_pcm_readi) is not
// reported again: one line per read at the API the app itself called.
'use strict';

const FLUSH_ROWS = 200;
const FLUSH_MS = 200;
const SND_PCM_STREAM_CAPTURE = 1;

let rows = [];
const hooked = new Set(); // "<module path>!<symbol>"
const depth = new Map(); // thread id -> nesting depth of hooked read calls

const clockGettime = new NativeFunction(
  Module.getGlobalExportByName('clock_gettime'), 'int', ['int', 'pointer']);

function monotonic() {
  const ts = Memory.alloc(16);
  clockGettime(1 /* CLOCK_MONOTONIC */, ts);
  return ts.readS64().toNumber() + ts.add(8).readS64().toNumber() / 1e9;
}

function readSize(p) {
  return Process.pointerSize === 8 ? p.readU64().toNumber() : p.readU32();
}

// Sample layouts we can measure: bytes per sample and how to turn the bytes into floats.
const LAYOUTS = {
  u8: { size: 1 },
  s16: { size: 2 },
  s24_32: { size: 4 },
  s32: { size: 4 },
  f32: { size: 4 },
};

// PulseAudio pa_sample_format_t (little-endian ones; big-endian cannot occur on x86/arm LE).
const PA_FORMATS = { 0: 'u8', 3: 's16', 5: 'f32', 7: 's32', 11: 's24_32' };
// ALSA snd_pcm_format_t.
const ALSA_FORMATS = { 1: 'u8', 2: 's16', 6: 's24_32', 10: 's32', 14: 'f32' };

// Peak and RMS as fractions of full scale, over all channels; [null, null] if unknown.
function levels(p, nbytes, layout) {
  if (layout === null || p.isNull() || nbytes <= 0) return [null, null];
  const n = Math.floor(nbytes / LAYOUTS[layout].size);
  if (n === 0) return [null, null];
  const buf = p.readByteArray(n * LAYOUTS[layout].size);
  let a;
  let scale;
  let offset = 0;
  let shift = false;
  switch (layout) {
    case 'u8': a = new Uint8Array(buf); scale = 128; offset = 128; break;
    case 's16': a = new Int16Array(buf); scale = 32768; break;
    case 's24_32': a = new Int32Array(buf); scale = 8388608; shift = true; break;
    case 's32': a = new Int32Array(buf); scale = 2147483648; break;
    default: a = new Float32Array(buf); scale = 1;
  }
  let peak = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    // S24 in a 32-bit container: sign-extend the low 24 bits.
    const raw = shift ? ((a[i] << 8) >> 8) : a[i];
    const v = (raw - offset) / scale;
    const m = v < 0 ? -v : v;
    if (m > peak) peak = m;
    sum += v * v;
  }
  return [peak, Math.sqrt(sum / a.length)];
}

function flush() {
  if (rows.length === 0) return;
  const batch = rows;
  rows = [];
  send({ type: 'reads', pid: Process.id, rows: batch });
}

function emit(t, api, tid, frames, nbytes, lv) {
  rows.push([t, api, tid, frames, nbytes, lv[0], lv[1]]);
  if (rows.length >= FLUSH_ROWS) flush();
}

// Enter/leave bookkeeping shared by every read hook: only the outermost call is reported.
function enter(ctx) {
  ctx.tid = Process.getCurrentThreadId();
  ctx.t = monotonic();
  const d = depth.get(ctx.tid) || 0;
  ctx.outer = d === 0;
  depth.set(ctx.tid, d + 1);
}

function leave(ctx) {
  const d = depth.get(ctx.tid) - 1;
  if (d <= 0) depth.delete(ctx.tid); else depth.set(ctx.tid, d);
  return ctx.outer;
}

function attach(module, symbol, callbacks) {
  const key = module.path + '!' + symbol;
  if (hooked.has(key)) return;
  hooked.add(key);
  const address = module.findExportByName(symbol);
  if (address === null) return; // not every version exports every symbol
  try {
    Interceptor.attach(address, callbacks);
    send({ type: 'hook', module: module.name, symbol: symbol, ok: true });
  } catch (e) {
    send({ type: 'hook', module: module.name, symbol: symbol, ok: false, error: String(e) });
  }
}

function fn(module, symbol, ret, args) {
  const address = module.findExportByName(symbol);
  return address === null ? null : new NativeFunction(address, ret, args);
}

// --- PulseAudio (libpulse) -------------------------------------------------------------
function hookPulse(module) {
  const getSpec = fn(module, 'pa_stream_get_sample_spec', 'pointer', ['pointer']);
  const specs = new Map(); // pa_stream* -> {layout, frameBytes}

  function specOf(stream) {
    const key = stream.toString();
    let s = specs.get(key);
    if (s === undefined) {
      s = { layout: null, frameBytes: 0 };
      if (getSpec !== null) {
        const ss = getSpec(stream);
        if (!ss.isNull()) {
          const layout = PA_FORMATS[ss.readS32()];
          const channels = ss.add(8).readU8();
          if (layout !== undefined) {
            s = { layout: layout, frameBytes: LAYOUTS[layout].size * channels };
          }
        }
      }
      specs.set(key, s);
    }
    return s;
  }

  attach(module, 'pa_stream_peek', {
    onEnter(args) { enter(this); this.s = args[0]; this.data = args[1]; this.n = args[2]; },
    onLeave(ret) {
      if (!leave(this) || ret.toInt32() !== 0) return;
      const nbytes = readSize(this.n);
      if (nbytes === 0) return; // nothing to read yet: a poll, not a read
      const data = this.data.readPointer(); // NULL with nbytes > 0 is a hole (no samples)
      const s = specOf(this.s);
      const frames = s.frameBytes ? Math.floor(nbytes / s.frameBytes) : null;
      emit(this.t, 'pulse:pa_stream_peek', this.tid, frames, nbytes,
        levels(data, nbytes, data.isNull() ? null : s.layout));
    },
  });
}

function hookPulseSimple(module) {
  const simples = new Map(); // pa_simple* -> {layout, frameBytes}
  attach(module, 'pa_simple_new', {
    onEnter(args) { this.ss = args[5]; },
    onLeave(ret) {
      if (ret.isNull() || this.ss.isNull()) return;
      const layout = PA_FORMATS[this.ss.readS32()];
      const channels = this.ss.add(8).readU8();
      simples.set(ret.toString(), layout === undefined ? { layout: null, frameBytes: 0 }
        : { layout: layout, frameBytes: LAYOUTS[layout].size * channels });
    },
  });
  attach(module, 'pa_simple_read', {
    onEnter(args) { enter(this); this.s = args[0]; this.buf = args[1]; this.n = args[2]; },
    onLeave(ret) {
      if (!leave(this) || ret.toInt32() !== 0) return;
      const nbytes = this.n.toUInt32(); // size_t argument; reads are far below 4 GiB
      const s = simples.get(this.s.toString()) || { layout: null, frameBytes: 0 };
      const frames = s.frameBytes ? Math.floor(nbytes / s.frameBytes) : null;
      emit(this.t, 'pulse:pa_simple_read', this.tid, frames, nbytes,
        levels(this.buf, nbytes, s.layout));
    },
  });
}

// --- PipeWire (libpipewire-0.3) ----------------------------------------------------------
// A native PipeWire client reads the microphone with pw_stream_dequeue_buffer on a capture
// stream: the buffer it gets holds the samples of one graph cycle in datas[0] (chunk offset
// and size). Clients of pipewire-pulse (Chromium...) use libpulse and are reported there.
const SPA_TYPE_ID = 3;
const SPA_TYPE_INT = 4;
const SPA_TYPE_OBJECT = 15;
const SPA_TYPE_CHOICE = 19;
const SPA_TYPE_OBJECT_FORMAT = 0x40003;
const SPA_PARAM_FORMAT = 4;
const SPA_FORMAT_AUDIO_FORMAT = 0x10001;
const SPA_FORMAT_AUDIO_CHANNELS = 0x10004;
// enum spa_audio_format (interleaved, then planar: datas[0] holds the first channel).
const SPA_FORMATS = { 258: 'u8', 259: 's16', 263: 's24_32', 267: 's32', 283: 'f32' };
const SPA_PLANAR = { 513: 'u8', 514: 's16', 515: 's24_32', 516: 's32', 518: 'f32' };
// pipewire-alsa's plugin dequeues on its own thread for an app that called snd_pcm_readi:
// that read is reported at ALSA, the API the app called.
const PW_ON_BEHALF = ['libasound_module_pcm_pipewire.so'];

// {layout, frameBytes} from a SPA_PARAM_Format pod (struct spa_pod_object), null if it is not
// a raw audio format we can measure. Props are {u32 key, u32 flags, spa_pod value} padded to 8.
function podFormat(pod) {
  if (pod.isNull() || pod.add(4).readU32() !== SPA_TYPE_OBJECT ||
      pod.add(8).readU32() !== SPA_TYPE_OBJECT_FORMAT ||
      pod.add(12).readU32() !== SPA_PARAM_FORMAT) return null;
  const end = 8 + pod.readU32();
  let fmt = null;
  let channels = 1;
  for (let off = 16; off + 16 <= end;) {
    const key = pod.add(off).readU32();
    const size = pod.add(off + 8).readU32();
    let type = pod.add(off + 12).readU32();
    let value = pod.add(off + 16);
    if (type === SPA_TYPE_CHOICE) { // {u32 type, u32 flags, spa_pod child, values...}
      type = value.add(12).readU32();
      value = value.add(16);
    }
    if (key === SPA_FORMAT_AUDIO_FORMAT && type === SPA_TYPE_ID) fmt = value.readU32();
    if (key === SPA_FORMAT_AUDIO_CHANNELS && type === SPA_TYPE_INT) channels = value.readS32();
    off += 16 + ((size + 7) & ~7);
  }
  if (SPA_FORMATS[fmt] !== undefined) {
    return { layout: SPA_FORMATS[fmt], frameBytes: LAYOUTS[SPA_FORMATS[fmt]].size * channels };
  }
  if (SPA_PLANAR[fmt] !== undefined) {
    return { layout: SPA_PLANAR[fmt], frameBytes: LAYOUTS[SPA_PLANAR[fmt]].size };
  }
  return null;
}

// libpipewire has no getter for a stream's negotiated format, and the tracer attaches after
// the stream has negotiated it (so its param_changed event is long gone). The stream keeps
// the format in its private param list (struct param {u32 id; u32 flags; struct spa_list
// link; struct spa_pod *param;} in pipewire/stream.c): find that list among the first bytes of
// the stream by the list invariant (head->next->prev == head) and take the entry whose id is
// SPA_PARAM_Format and whose pod is a Format object. Anything else is no format (no levels).
function streamFormat(stream) {
  const ps = Process.pointerSize;
  for (let off = 0; off < 2048; off += ps) {
    try {
      const head = stream.add(off);
      const first = head.readPointer();
      if (first.isNull() || first.equals(head) || !first.add(ps).readPointer().equals(head)) {
        continue;
      }
      let link = first;
      for (let i = 0; i < 64 && !link.equals(head); i++) {
        if (link.sub(8).readU32() === SPA_PARAM_FORMAT) {
          const format = podFormat(link.add(2 * ps).readPointer());
          if (format !== null) return format;
        }
        link = link.readPointer();
      }
    } catch (e) {
      // not a list at this offset
    }
  }
  return null;
}

function hookPipewire(module) {
  const getProps = fn(module, 'pw_stream_get_properties', 'pointer', ['pointer']);
  const propsGet = fn(module, 'pw_properties_get', 'pointer', ['pointer', 'pointer']);
  const MEDIA_CLASS = Memory.allocUtf8String('media.class');
  const streams = new Map(); // pw_stream* -> {capture, layout, frameBytes}
  const callers = new Map(); // return address -> dequeued on behalf of another hooked API

  // A capture stream is an audio input stream (media.class, which pw_stream_connect sets from
  // the direction unless the app chose one); a virtual sink (Audio/Sink) is not a microphone.
  function streamInfo(stream) {
    const key = stream.toString();
    let info = streams.get(key);
    if (info === undefined) {
      let cls = null;
      if (getProps !== null && propsGet !== null) {
        const props = getProps(stream);
        const value = props.isNull() ? ptr(0) : propsGet(props, MEDIA_CLASS);
        cls = value.isNull() ? null : value.readUtf8String();
      }
      info = { capture: cls !== null && cls.startsWith('Stream/Input/Audio'),
        layout: null, frameBytes: 0 };
      if (info.capture) {
        const format = streamFormat(stream);
        if (format !== null) Object.assign(info, format);
      }
      streams.set(key, info);
    }
    return info;
  }

  function onBehalf(address) {
    const key = address.toString();
    let found = callers.get(key);
    if (found === undefined) {
      const m = Process.findModuleByAddress(address);
      found = m !== null && PW_ON_BEHALF.includes(m.name);
      callers.set(key, found);
    }
    return found;
  }

  attach(module, 'pw_stream_destroy', {
    onEnter(args) { streams.delete(args[0].toString()); },
  });
  attach(module, 'pw_stream_dequeue_buffer', {
    onEnter(args) { enter(this); this.s = args[0]; this.ra = this.returnAddress; },
    onLeave(ret) {
      if (!leave(this) || ret.isNull() || onBehalf(this.ra)) return;
      let info = streamInfo(this.s);
      if (!info.capture) return;
      const buffer = ret.readPointer(); // pw_buffer.buffer: struct spa_buffer *
      if (buffer.isNull() || buffer.add(4).readU32() === 0) return; // no datas
      // spa_buffer {u32 n_metas, n_datas; metas*; datas*}; spa_data {u32 type, flags;
      // i64 fd; u32 mapoffset, maxsize; void *data; spa_chunk *chunk}; spa_chunk {u32 offset,
      // size; i32 stride, flags}
      const d = buffer.add(8 + Process.pointerSize).readPointer();
      const maxsize = d.add(20).readU32();
      const data = d.add(24).readPointer();
      const chunk = d.add(24 + Process.pointerSize).readPointer();
      if (chunk.isNull()) return;
      const nbytes = Math.min(chunk.add(4).readU32(), maxsize);
      if (nbytes === 0) return; // an empty cycle: nothing was read
      const stride = chunk.add(8).readS32();
      if (stride > 0 && info.frameBytes && stride !== info.frameBytes &&
          stride !== info.stale) {
        streams.delete(this.s.toString()); // renegotiated: look the format up again (once)
        info = streamInfo(this.s);
        info.stale = stride;
      }
      const perFrame = info.frameBytes || (stride > 0 ? stride : 0);
      const frames = perFrame ? Math.floor(nbytes / perFrame) : null;
      const offset = maxsize ? chunk.readU32() % maxsize : 0;
      const start = data.isNull() ? ptr(0) : data.add(offset);
      emit(this.t, 'pipewire:pw_stream_dequeue_buffer', this.tid, frames, nbytes,
        levels(start, Math.min(nbytes, maxsize - offset), info.layout));
    },
  });
}

// --- ALSA (libasound) ------------------------------------------------------------------
function hookAlsa(module) {
  const streamOf = fn(module, 'snd_pcm_stream', 'int', ['pointer']);
  const hwMalloc = fn(module, 'snd_pcm_hw_params_malloc', 'int', ['pointer']);
  const hwFree = fn(module, 'snd_pcm_hw_params_free', 'void', ['pointer']);
  const hwCurrent = fn(module, 'snd_pcm_hw_params_current', 'int', ['pointer', 'pointer']);
  const hwFormat = fn(module, 'snd_pcm_hw_params_get_format', 'int', ['pointer', 'pointer']);
  const hwChannels = fn(module, 'snd_pcm_hw_params_get_channels', 'int', ['pointer', 'pointer']);
  const pcms = new Map(); // snd_pcm_t* -> {capture, layout, sampleBytes, frameBytes}

  // The capture format is read from the device's current hw params, so a late attach
  // (after snd_pcm_hw_params) still knows how to measure the samples.
  function pcmInfo(pcm) {
    const key = pcm.toString();
    let info = pcms.get(key);
    if (info !== undefined) return info;
    info = { capture: true, layout: null, sampleBytes: 0, frameBytes: 0 };
    if (streamOf !== null) info.capture = streamOf(pcm) === SND_PCM_STREAM_CAPTURE;
    if (hwMalloc && hwCurrent && hwFormat && hwChannels) {
      const pp = Memory.alloc(Process.pointerSize);
      if (hwMalloc(pp) === 0) {
        const params = pp.readPointer();
        const fmt = Memory.alloc(4);
        const ch = Memory.alloc(4);
        if (hwCurrent(pcm, params) === 0 && hwFormat(params, fmt) === 0 &&
            hwChannels(params, ch) === 0) {
          const layout = ALSA_FORMATS[fmt.readS32()];
          if (layout !== undefined) {
            info.layout = layout;
            info.sampleBytes = LAYOUTS[layout].size;
            info.frameBytes = info.sampleBytes * ch.readU32();
          }
        }
        if (hwFree) hwFree(params);
      }
    }
    pcms.set(key, info);
    return info;
  }

  attach(module, 'snd_pcm_readi', {
    onEnter(args) { enter(this); this.pcm = args[0]; this.buf = args[1]; },
    onLeave(ret) {
      if (!leave(this)) return;
      const frames = ret.toInt32();
      if (frames <= 0) return;
      const info = pcmInfo(this.pcm);
      const nbytes = info.frameBytes ? frames * info.frameBytes : null;
      emit(this.t, 'alsa:snd_pcm_readi', this.tid, frames, nbytes,
        levels(this.buf, nbytes || 0, info.layout));
    },
  });
  attach(module, 'snd_pcm_readn', {
    onEnter(args) { enter(this); this.pcm = args[0]; this.bufs = args[1]; },
    onLeave(ret) {
      if (!leave(this)) return;
      const frames = ret.toInt32();
      if (frames <= 0) return;
      const info = pcmInfo(this.pcm);
      const nbytes = info.frameBytes ? frames * info.frameBytes : null;
      // Non-interleaved: measure the first channel's buffer.
      const first = this.bufs.isNull() ? ptr(0) : this.bufs.readPointer();
      emit(this.t, 'alsa:snd_pcm_readn', this.tid, frames, nbytes,
        levels(first, frames * info.sampleBytes, info.layout));
    },
  });
  attach(module, 'snd_pcm_mmap_begin', {
    onEnter(args) { this.pcm = args[0]; this.areas = args[1]; },
    onLeave(ret) {
      if (ret.toInt32() < 0) return;
      const info = pcmInfo(this.pcm);
      if (info.capture) info.areas = this.areas.readPointer();
    },
  });
  attach(module, 'snd_pcm_mmap_commit', {
    onEnter(args) {
      enter(this); this.pcm = args[0]; this.offset = args[1].toUInt32();
    },
    onLeave(ret) {
      if (!leave(this)) return;
      const frames = ret.toInt32();
      if (frames <= 0) return;
      const info = pcmInfo(this.pcm);
      if (!info.capture) return;
      const nbytes = info.frameBytes ? frames * info.frameBytes : null;
      let lv = [null, null];
      if (info.areas !== undefined && !info.areas.isNull() && nbytes) {
        // snd_pcm_channel_area_t {void *addr; unsigned first; unsigned step;} (bits)
        const addr = info.areas.readPointer();
        const first = info.areas.add(Process.pointerSize).readU32();
        const step = info.areas.add(Process.pointerSize + 4).readU32();
        const start = addr.add(Math.floor((first + this.offset * step) / 8));
        lv = levels(start, Math.floor((frames * step) / 8), info.layout);
      }
      emit(this.t, 'alsa:snd_pcm_mmap_commit', this.tid, frames, nbytes, lv);
    },
  });
}

function install(module) {
  const name = module.name;
  try {
    if (name.startsWith('libpulse.so')) hookPulse(module);
    else if (name.startsWith('libpulse-simple.so')) hookPulseSimple(module);
    else if (name.startsWith('libasound.so')) hookAlsa(module);
    else if (name.startsWith('libpipewire-0.3.so')) hookPipewire(module);
  } catch (e) {
    send({ type: 'hook', module: name, symbol: '*', ok: false, error: String(e) });
  }
}

for (const m of Process.enumerateModules()) install(m);
// Libraries opened later with dlopen (Chromium's audio service, the ALSA pulse plugin).
Process.attachModuleObserver({ onAdded(m) { install(m); } });
setInterval(flush, FLUSH_MS);

rpc.exports = {
  // Called by the tracer before it detaches, so no buffered read is lost.
  flush() {
    const batch = rows;
    rows = [];
    return batch;
  },
};
