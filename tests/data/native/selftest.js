// Test-only addition to the native agents (tests/test_native_web.py appends it to
// native_core.js + wasapi.js or coreaudio.js and loads the result into a local process).
//
// It adds rpc exports that (a) run the agents' platform-independent core on bytes written into
// this process's memory, and (b) stand in for the platform APIs with functions built here
// (NativeCallback), then call them the way an app would, so the platform bindings' own hooks
// (vtable discovery, Interceptor.attach, out-parameter decoding) run for real in this
// process. The stand-ins encode the same reading of the Windows/macOS ABIs as the agents, so
// they catch code errors, not a misread ABI: only a real Windows or macOS host can.
'use strict';

const keep = []; // everything the stand-ins allocate stays alive for the script's lifetime

function bytesFrom(hexText) {
  const p = Memory.alloc(Math.max(1, hexText.length / 2));
  keep.push(p);
  for (let i = 0; i < hexText.length / 2; i++) {
    p.add(i).writeU8(parseInt(hexText.slice(2 * i, 2 * i + 2), 16));
  }
  return p;
}

function cb(fn, ret, args) {
  const c = new NativeCallback(fn, ret, args);
  keep.push(c);
  return c;
}

// A COM-style object: first word points to a vtable of `slots` (IUnknown in 0-2).
function comObject(slots, state) {
  const count = Math.max(...Object.keys(slots).map(Number), 2) + 1;
  const vtable = Memory.alloc(count * Process.pointerSize);
  const unknown = {
    0: cb(() => 0x80004002, 'int', ['pointer', 'pointer', 'pointer']), // E_NOINTERFACE
    1: cb(() => 1, 'uint32', ['pointer']),
    2: cb(() => 1, 'uint32', ['pointer']),
  };
  for (let i = 0; i < count; i++) {
    const fn = slots[i] || unknown[i] || cb(() => 0x80004001, 'int', ['pointer']); // E_NOTIMPL
    vtable.add(i * Process.pointerSize).writePointer(fn);
  }
  const obj = Memory.alloc(Process.pointerSize * 2);
  obj.writePointer(vtable);
  keep.push(vtable, obj);
  if (state) state.obj = obj;
  return obj;
}

// WAVEFORMATEX(TENSIBLE) for {float, bits, channels, rate, extensible}.
function waveFormat(f) {
  const p = Memory.alloc(40);
  keep.push(p);
  const blockAlign = (f.bits / 8) * f.channels;
  p.writeU16(f.extensible ? 0xFFFE : (f.float ? 3 : 1));
  p.add(2).writeU16(f.channels);
  p.add(4).writeU32(f.rate);
  p.add(8).writeU32(f.rate * blockAlign);
  p.add(12).writeU16(blockAlign);
  p.add(14).writeU16(f.bits);
  p.add(16).writeU16(f.extensible ? 22 : 0);
  if (f.extensible) {
    p.add(18).writeU16(f.bits);
    p.add(20).writeU32(3);
    writeGuid(p.add(24), f.float ? KSDATAFORMAT_SUBTYPE_IEEE_FLOAT : KSDATAFORMAT_SUBTYPE_PCM);
  }
  return p;
}

// AudioStreamBasicDescription for {float, bits, channels, rate, interleaved}.
function asbd(f) {
  const p = Memory.alloc(40);
  keep.push(p);
  const sampleBytes = f.bits / 8;
  p.writeDouble(f.rate);
  p.add(8).writeU32(kAudioFormatLinearPCM);
  p.add(12).writeU32((f.float ? 1 : 4) | 8 | (f.interleaved ? 0 : 32));
  const frameBytes = f.interleaved ? sampleBytes * f.channels : sampleBytes;
  p.add(16).writeU32(frameBytes);
  p.add(20).writeU32(1);
  p.add(24).writeU32(frameBytes);
  p.add(28).writeU32(f.channels);
  p.add(32).writeU32(f.bits);
  return p;
}

// --- the simulated WASAPI ----------------------------------------------------------------
function simulatedWasapi(spec) {
  const api = { calls: [], packets: spec.packets.slice() };
  const format = waveFormat(spec.format);
  // One IAudioCaptureClient per IAudioClient, all sharing the class's functions (as in COM).
  const captureSlots = {
    3: cb((self, ppData, pFrames, pFlags, pPos, pQpc) => { // GetBuffer
      const packet = api.packets.shift();
      if (packet === undefined) { pFrames.writeU32(0); return 0x08890001; } // BUFFER_EMPTY
      const data = bytesFrom(packet.hex);
      ppData.writePointer(data);
      pFrames.writeU32(packet.frames);
      pFlags.writeU32(packet.flags);
      if (!pPos.isNull()) pPos.writeU64(packet.position);
      if (!pQpc.isNull()) pQpc.writeU64(0);
      return 0;
    }, 'int', ['pointer', 'pointer', 'pointer', 'pointer', 'pointer', 'pointer']),
    4: cb(() => 0, 'int', ['pointer', 'uint32']), // ReleaseBuffer
  };
  const captures = new Map(); // IAudioClient* -> IAudioCaptureClient*
  const clientSlots = {
    3: cb(() => 0, 'int', ['pointer', 'int', 'uint32', 'int64', 'int64', 'pointer', 'pointer']),
    8: cb((self, pp) => { pp.writePointer(format); return 0; }, 'int', ['pointer', 'pointer']),
    10: cb(() => 0, 'int', ['pointer']), // Start
    11: cb(() => 0, 'int', ['pointer']), // Stop
    12: cb(() => 0, 'int', ['pointer']), // Reset
    14: cb((self, riid, ppv) => { // GetService
      if (!guidEquals(riid, WASAPI.IID_IAudioCaptureClient)) return 0x80004002;
      const key = self.toString();
      if (!captures.has(key)) captures.set(key, comObject(captureSlots));
      ppv.writePointer(captures.get(key));
      return 0;
    }, 'int', ['pointer', 'pointer', 'pointer']),
  };
  const client = comObject(clientSlots);
  const probeClient = comObject(clientSlots); // another object of the same class
  let activations = 0;
  const device = comObject({
    3: cb((self, iid, ctx, params, ppv) => { // Activate
      ppv.writePointer(activations++ === 0 ? client : probeClient);
      return 0;
    }, 'int', ['pointer', 'pointer', 'uint32', 'pointer', 'pointer']),
  });
  const enumerator = comObject({
    4: cb((self, flow, role, pp) => { pp.writePointer(device); return 0; },
      'int', ['pointer', 'int', 'int', 'pointer']),
  });
  const exports = {
    CoCreateInstance: cb((clsid, outer, ctx, riid, ppv) => {
      if (!guidEquals(clsid, WASAPI.CLSID_MMDeviceEnumerator)) return 0x80040154;
      ppv.writePointer(enumerator);
      return 0;
    }, 'int', ['pointer', 'pointer', 'uint32', 'pointer', 'pointer']),
    CoInitializeEx: cb(() => 0, 'int', ['pointer', 'uint32']),
    CoUninitialize: cb(() => {}, 'void', []),
    CoTaskMemFree: cb(() => {}, 'void', ['pointer']),
  };
  api.resolve = (name) => (name in exports ? exports[name] : null);
  api.client = client;
  api.captures = captures;
  return api;
}

// What an app does: set up a capture stream and start it (`setUp`), read every packet,
// stop it. Without `setUp` the stream was set up and started before the agent was loaded.
function wasapiApp(api, setUp) {
  const out = Memory.alloc(Process.pointerSize);
  const P = Process.pointerSize;
  let client = api.client;
  if (setUp) {
    const create = new NativeFunction(api.resolve('CoCreateInstance'), 'int',
      ['pointer', 'pointer', 'uint32', 'pointer', 'pointer']);
    create(allocGuid(WASAPI.CLSID_MMDeviceEnumerator), ptr(0), 0x17,
      allocGuid(WASAPI.IID_IMMDeviceEnumerator), out);
    const enumerator = out.readPointer();
    method(enumerator, 4, 'int', ['int', 'int', 'pointer'])(enumerator, 1, 0, out);
    const device = out.readPointer();
    method(device, 3, 'int', ['pointer', 'uint32', 'pointer', 'pointer'])(
      device, allocGuid(WASAPI.IID_IAudioClient), 0x17, ptr(0), out);
    client = out.readPointer();
    method(client, 8, 'int', ['pointer'])(client, out);
    method(client, 3, 'int', ['int', 'uint32', 'int64', 'int64', 'pointer', 'pointer'])(
      client, 0, 0x00100000 /* EVENTCALLBACK */, 200000, 0, out.readPointer(), ptr(0));
    method(client, 14, 'int', ['pointer', 'pointer'])(
      client, allocGuid(WASAPI.IID_IAudioCaptureClient), out);
    method(client, 10, 'int', [])(client);
  }
  const capture = api.captures.get(client.toString());
  const getBuffer = method(capture, 3, 'int',
    ['pointer', 'pointer', 'pointer', 'pointer', 'pointer']);
  const releaseBuffer = method(capture, 4, 'int', ['uint32']);
  const cells = Memory.alloc(6 * P);
  for (;;) {
    const hr = getBuffer(capture, cells, cells.add(P), cells.add(2 * P), cells.add(3 * P),
      cells.add(4 * P));
    if (hr !== 0) break;
    releaseBuffer(capture, cells.add(P).readU32());
  }
  method(client, 11, 'int', [])(client);
}

// --- the simulated CoreAudio -------------------------------------------------------------
function simulatedCoreAudio(spec) {
  const api = { packets: spec.packets.slice(), renders: spec.renders.slice() };
  const deviceFormat = asbd(spec.deviceFormat);
  const unitFormat = asbd(spec.unitFormat);
  const exports = {
    AudioDeviceCreateIOProcID: cb((device, proc, data, out) => {
      out.writePointer(proc);
      return 0;
    }, 'int', ['uint32', 'pointer', 'pointer', 'pointer']),
    AudioDeviceCreateIOProcIDWithBlock: cb((out, device, queue, block) => {
      out.writePointer(block);
      return 0;
    }, 'int', ['pointer', 'uint32', 'pointer', 'pointer']),
    AudioDeviceStart: cb(() => 0, 'int', ['uint32', 'pointer']),
    AudioDeviceStop: cb(() => 0, 'int', ['uint32', 'pointer']),
    AudioObjectGetPropertyData: cb((device, address, qs, q, size, out) => {
      Memory.copy(out, deviceFormat, 40);
      size.writeU32(40);
      return 0;
    }, 'int', ['uint32', 'pointer', 'uint32', 'pointer', 'pointer', 'pointer']),
    AudioUnitGetProperty: cb((unit, id, scope, element, out, size) => {
      Memory.copy(out, unitFormat, 40);
      size.writeU32(40);
      return 0;
    }, 'int', ['pointer', 'uint32', 'uint32', 'uint32', 'pointer', 'pointer']),
    AudioUnitRender: cb((unit, flags, ts, bus, frames, data) => {
      const render = api.renders.shift();
      flags.writeU32(render.flags);
      const n = data.readU32();
      for (let i = 0; i < n; i++) {
        const b = data.add(Process.pointerSize + i * (8 + Process.pointerSize));
        const bytes = bytesFrom(render.hex[i]);
        b.add(4).writeU32(render.hex[i].length / 2);
        b.add(8).writePointer(bytes);
      }
      return 0;
    }, 'int', ['pointer', 'pointer', 'pointer', 'uint32', 'uint32', 'pointer']),
  };
  api.resolve = (name) => (name in exports ? exports[name] : null);
  return api;
}

function bufferList(hexes, channelsEach) {
  const P = Process.pointerSize;
  const abl = Memory.alloc(P + hexes.length * (8 + P));
  keep.push(abl);
  abl.writeU32(hexes.length);
  hexes.forEach((h, i) => {
    const b = abl.add(P + i * (8 + P));
    b.writeU32(channelsEach);
    b.add(4).writeU32(h.length / 2);
    b.add(8).writePointer(h.length ? bytesFrom(h) : ptr(0));
  });
  return abl;
}

// What an app does on macOS: an IOProc (or an IO block) on the input device, started and
// called by "the HAL" (here: us) once per packet; then an AUHAL input pulled by render.
function coreAudioApp(api, spec) {
  const device = 73;
  const ioproc = cb(() => 0, 'int',
    ['uint32', 'pointer', 'pointer', 'pointer', 'pointer', 'pointer', 'pointer']);
  const out = Memory.alloc(Process.pointerSize);
  const P = Process.pointerSize;
  const create = new NativeFunction(api.resolve('AudioDeviceCreateIOProcID'), 'int',
    ['uint32', 'pointer', 'pointer', 'pointer']);
  create(device, ioproc, ptr(0), out);
  const start = new NativeFunction(api.resolve('AudioDeviceStart'), 'int', ['uint32', 'pointer']);
  const stop = new NativeFunction(api.resolve('AudioDeviceStop'), 'int', ['uint32', 'pointer']);
  start(device, out.readPointer());
  const call = new NativeFunction(ioproc, 'int',
    ['uint32', 'pointer', 'pointer', 'pointer', 'pointer', 'pointer', 'pointer']);
  for (const packet of api.packets) {
    call(device, ptr(0), bufferList(packet.hex, packet.channels), ptr(0),
      bufferList([], 0), ptr(0), ptr(0));
  }
  stop(device, out.readPointer());
  // The block variant: a block literal whose invoke function is the app's code.
  const invoke = cb(() => {}, 'void',
    ['pointer', 'pointer', 'pointer', 'pointer', 'pointer', 'pointer']);
  const block = Memory.alloc(P + 8 + P);
  keep.push(block);
  block.add(P + 8).writePointer(invoke);
  const createBlock = new NativeFunction(api.resolve('AudioDeviceCreateIOProcIDWithBlock'),
    'int', ['pointer', 'uint32', 'pointer', 'pointer']);
  createBlock(out, device + 1, ptr(0), block);
  new NativeFunction(invoke, 'void',
    ['pointer', 'pointer', 'pointer', 'pointer', 'pointer', 'pointer'])(
    block, ptr(0), bufferList(spec.blockPacket.hex, spec.blockPacket.channels), ptr(0),
    ptr(0), ptr(0));
  // AUHAL: render the input element (bus 1) and, to be ignored, the output element (bus 0).
  const render = new NativeFunction(api.resolve('AudioUnitRender'), 'int',
    ['pointer', 'pointer', 'pointer', 'uint32', 'uint32', 'pointer']);
  const unit = Memory.alloc(16);
  keep.push(unit);
  const flags = Memory.alloc(4);
  for (const r of spec.renders) {
    flags.writeU32(0);
    render(unit, flags, ptr(0), r.bus, r.frames,
      bufferList(r.hex.map(() => ''), 1));
  }
}

rpc.exports.levels = function (layout, hexText) {
  return levels(bytesFrom(hexText), hexText.length / 2, layout);
};
rpc.exports.flags = function (bits, table) {
  return decodeFlags(bits, table === 'wasapi' ? BUFFER_FLAGS : RENDER_FLAGS);
};
rpc.exports.guid = function (text) {
  return readGuid(allocGuid(text));
};
rpc.exports.waveformat = function (f) {
  return parseWaveFormat(waveFormat(f));
};
rpc.exports.asbd = function (f) {
  return parseASBD(asbd(f));
};
rpc.exports.simulateWasapi = function (spec) {
  const api = simulatedWasapi(spec);
  let probe = null;
  if (spec.lateAttach) {
    wasapiApp(api, true); // before the agent: nothing is hooked yet
    api.packets = spec.packets.slice();
    // (the app's stream keeps running: it is read again below without a new Start)
  }
  const binding = installWasapi(api.resolve);
  if (spec.lateAttach) {
    probe = binding.probe();
    wasapiApp(api, false); // the stream set up earlier, started again and read
  } else {
    wasapiApp(api, true);
  }
  return { probe: probe, rows: takeRows(), hooks: Array.from(hooked.values()) };
};
rpc.exports.simulateCoreaudio = function (spec) {
  const api = simulatedCoreAudio(spec);
  installCoreAudio(api.resolve);
  coreAudioApp(api, spec);
  return { rows: takeRows(), hooks: Array.from(hooked.values()) };
};
rpc.exports.findModule = function (name) {
  const m = findModule(name);
  return m === null ? null : m.name;
};
