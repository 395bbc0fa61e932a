// Frida 17 agent, Windows: every WASAPI capture call an app makes (loaded after native_core.js).
//
// WASAPI is COM: IAudioClient and IAudioCaptureClient have no exported functions to hook, only
// vtables inside AudioSes.dll that are shared by every object of a class. The agent learns
// them the way the app does, following the objects it is handed:
//
//   CoCreateInstance(CLSID_MMDeviceEnumerator, IID_IMMDeviceEnumerator) -> enumerator
//   enumerator->GetDefaultAudioEndpoint / GetDevice / EnumAudioEndpoints->Item -> IMMDevice
//   device->Activate(IID_IAudioClient[2|3]) -> IAudioClient
//   client->GetService(IID_IAudioCaptureClient) -> IAudioCaptureClient
//
// and attaches to the vtable entries (slot numbers after the three IUnknown slots):
//   IAudioClient: Initialize 3 (the stream format), GetMixFormat 8, Start 10, Stop 11,
//                 Reset 12, GetService 14;
//   IAudioCaptureClient: GetBuffer 3, ReleaseBuffer 4.
// A process that set up its capture before the tracer attached has already walked that
// chain, so rpc `probe()` walks it once itself (create, never start, a shared-mode capture
// stream on the default capture device), which finds the same shared vtables; its own calls
// are not reported.
//
// Rows (see native_core.js `row`):
//   wasapi:GetBuffer     kind read: frames, bytes, flags (AUDCLNT_BUFFERFLAGS_* names),
//                        silent, peak/rms of the buffer (null when SILENT: the buffer then
//                        holds no data the app may use), device_position, client;
//   wasapi:ReleaseBuffer kind call: frames released;
//   wasapi:Initialize    kind call: share_mode, stream_flags, loopback, format;
//   wasapi:Start / wasapi:Stop / wasapi:Reset   kind call: client.
// Only capture streams are reported: a client is capture once GetService handed out an
// IAudioCaptureClient for it (render streams of the same class are ignored).
'use strict';

const WASAPI = {
  CLSID_MMDeviceEnumerator: 'BCDE0395-E52F-467C-8E3D-C4579291692E',
  IID_IMMDeviceEnumerator: 'A95664D2-9614-4F35-A746-DE8DB63617E6',
  IID_IAudioClient: '1CB9AD4C-DBFA-4C32-B178-C2F568A703B2',
  IID_IAudioClient2: '726778CD-F60A-4EDA-82DE-E47610CD78AA',
  IID_IAudioClient3: '7ED4EE07-8E67-4CD4-8C1A-2B7A5987AD42',
  IID_IAudioCaptureClient: 'C8ADBD64-E71E-48A0-A4DE-185C395CD317',
};
const AUDIO_CLIENT_IIDS = [WASAPI.IID_IAudioClient, WASAPI.IID_IAudioClient2,
  WASAPI.IID_IAudioClient3];

const SLOT = {
  Release: 2,
  // IMMDeviceEnumerator
  EnumAudioEndpoints: 3, GetDefaultAudioEndpoint: 4, GetDevice: 5,
  // IMMDeviceCollection
  Item: 4,
  // IMMDevice
  Activate: 3,
  // IAudioClient
  Initialize: 3, GetMixFormat: 8, Start: 10, Stop: 11, Reset: 12, GetService: 14,
  // IAudioCaptureClient
  GetBuffer: 3, ReleaseBuffer: 4,
};

const BUFFER_FLAGS = [
  [1, 'DATA_DISCONTINUITY'],
  [2, 'SILENT'],
  [4, 'TIMESTAMP_ERROR'],
];
const AUDCLNT_BUFFERFLAGS_SILENT = 2;
const AUDCLNT_STREAMFLAGS_LOOPBACK = 0x00020000;
const S_OK = 0;
const E_CAPTURE = 1; // EDataFlow eCapture
const CLSCTX_ALL = 0x17;

function failed(hr) { return (hr | 0) < 0; }

function wasapiAbi() {
  return Process.arch === 'ia32' ? 'stdcall' : 'default';
}

function method(obj, index, ret, args) {
  return new NativeFunction(vtableSlot(obj, index), ret, ['pointer'].concat(args), wasapiAbi());
}

function release(obj) {
  if (!obj.isNull()) method(obj, SLOT.Release, 'uint32', [])(obj);
}

// `resolve(name)` gives the address of an exported function or null: the real exports of
// combase.dll/ole32.dll in an app, stand-ins in the Linux self-test.
function installWasapi(resolve) {
  const clients = new Map(); // IAudioClient* -> {capture, format, formatSource, loopback}
  const owners = new Map(); // IAudioCaptureClient* -> IAudioClient*
  // Threads making our own calls (the probe, a classification): not the app's calls.
  const internal = new Set();
  let probeFormat = null; // mix format of the default capture device, from the probe

  function quiet() { return internal.has(Process.getCurrentThreadId()); }

  function asInternal(fn) {
    const tid = Process.getCurrentThreadId();
    const outer = internal.has(tid);
    internal.add(tid);
    try {
      return fn();
    } finally {
      if (!outer) internal.delete(tid);
    }
  }

  function clientInfo(client) {
    const key = client.toString();
    let info = clients.get(key);
    if (info === undefined) {
      info = { capture: false, format: null, formatSource: null, loopback: false };
      clients.set(key, info);
    }
    return info;
  }

  // The format of a client initialised before we attached: its mix format, which is what a
  // shared-mode stream delivers unless the app asked for conversion.
  function mixFormat(client) {
    const free = resolve('CoTaskMemFree');
    const out = Memory.alloc(Process.pointerSize);
    out.writePointer(ptr(0));
    const hr = method(client, SLOT.GetMixFormat, 'int', ['pointer'])(client, out);
    if (failed(hr) || out.readPointer().isNull()) return null;
    const format = parseWaveFormat(out.readPointer());
    if (free !== null) new NativeFunction(free, 'void', ['pointer'])(out.readPointer());
    return format;
  }

  // [format, where it came from] of the stream a capture client belongs to. A capture client
  // set up before we attached has no known owner: the default capture device's mix format
  // (from the probe) is then the best guess, and the row says so.
  function formatOf(clientKey) {
    const info = clientKey === null ? undefined : clients.get(clientKey);
    if (info === undefined) {
      return probeFormat === null ? [null, null] : [probeFormat, 'probe-default-device'];
    }
    if (info.format === null) {
      const format = asInternal(() => mixFormat(ptr(clientKey)));
      if (format !== null) {
        info.format = format;
        info.formatSource = 'mix';
      }
    }
    return [info.format, info.formatSource];
  }

  // Is `client` (first seen at Start/Stop, set up before we attached) a capture stream?
  // Ask it for an IAudioCaptureClient, which only capture streams hand out.
  function classify(client) {
    const info = clientInfo(client);
    if (info.classified || info.capture) return info;
    info.classified = true;
    asInternal(() => {
      const out = Memory.alloc(Process.pointerSize);
      out.writePointer(ptr(0));
      const hr = method(client, SLOT.GetService, 'int', ['pointer', 'pointer'])(
        client, allocGuid(WASAPI.IID_IAudioCaptureClient), out);
      const capture = out.readPointer();
      if (failed(hr) || capture.isNull()) return;
      info.capture = true;
      owners.set(capture.toString(), client.toString());
      hookCaptureClient(capture);
      release(capture);
    });
    return info;
  }

  function hookCaptureClient(capture) {
    hook('wasapi', 'IAudioCaptureClient::GetBuffer', vtableSlot(capture, SLOT.GetBuffer), {
      onEnter(args) {
        this.skip = quiet();
        this.t = clock.now();
        this.self = args[0];
        this.ppData = args[1];
        this.pFrames = args[2];
        this.pFlags = args[3];
        this.pPosition = args[4];
      },
      onLeave(ret) {
        if (this.skip || ret.toInt32() !== S_OK) return; // AUDCLNT_S_BUFFER_EMPTY: a poll
        emit(getBufferRow(this, owners, formatOf));
      },
    });
    hook('wasapi', 'IAudioCaptureClient::ReleaseBuffer',
      vtableSlot(capture, SLOT.ReleaseBuffer), {
        onEnter(args) {
          if (quiet()) return;
          const client = owners.get(args[0].toString()) || null;
          emit(row('wasapi:ReleaseBuffer', 'call', clock.now(), Process.getCurrentThreadId(),
            { frames: args[1].toUInt32(), client: client }));
        },
      });
  }

  function controlHook(name) {
    return {
      onEnter(args) {
        this.skip = quiet();
        this.t = clock.now();
        this.self = args[0];
      },
      onLeave(ret) {
        if (this.skip) return;
        const info = classify(this.self);
        if (!info.capture) return;
        emit(row('wasapi:' + name, 'call', this.t, Process.getCurrentThreadId(),
          { client: this.self.toString(), hr: ret.toInt32(), loopback: info.loopback }));
      },
    };
  }

  function hookAudioClient(client) {
    hook('wasapi', 'IAudioClient::Initialize', vtableSlot(client, SLOT.Initialize), {
      onEnter(args) {
        this.skip = quiet();
        this.t = clock.now();
        this.self = args[0];
        this.shareMode = args[1].toInt32();
        this.streamFlags = args[2].toUInt32();
        this.format = parseWaveFormat(args[5]);
      },
      onLeave(ret) {
        if (failed(ret.toInt32())) return;
        // Every stream is initialised once: a fresh record, even if a released client's
        // address is being reused.
        clients.delete(this.self.toString());
        const info = clientInfo(this.self);
        info.format = this.format;
        info.formatSource = 'initialize';
        info.loopback = (this.streamFlags & AUDCLNT_STREAMFLAGS_LOOPBACK) !== 0;
        info.initialize = {
          t: this.t, share_mode: this.shareMode === 1 ? 'exclusive' : 'shared',
          stream_flags: '0x' + this.streamFlags.toString(16), format: this.format,
        };
      },
    });
    hook('wasapi', 'IAudioClient::GetService', vtableSlot(client, SLOT.GetService), {
      onEnter(args) {
        this.skip = quiet();
        this.self = args[0];
        this.riid = args[1];
        this.ppv = args[2];
      },
      onLeave(ret) {
        if (failed(ret.toInt32()) || !guidEquals(this.riid, WASAPI.IID_IAudioCaptureClient)) return;
        const capture = this.ppv.readPointer();
        const key = this.self.toString();
        owners.set(capture.toString(), key);
        hookCaptureClient(capture);
        if (this.skip) return;
        const info = clientInfo(this.self);
        if (!info.capture) {
          info.capture = true;
          // Initialize comes before GetService: report it now that we know it is capture.
          const init = info.initialize || {};
          emit(row('wasapi:Initialize', 'call', init.t === undefined ? clock.now() : init.t,
            Process.getCurrentThreadId(), {
              client: key, share_mode: init.share_mode || null,
              stream_flags: init.stream_flags || null, loopback: info.loopback,
              format: info.format, format_source: info.formatSource,
            }));
        }
      },
    });
    hook('wasapi', 'IAudioClient::Start', vtableSlot(client, SLOT.Start), controlHook('Start'));
    hook('wasapi', 'IAudioClient::Stop', vtableSlot(client, SLOT.Stop), controlHook('Stop'));
    hook('wasapi', 'IAudioClient::Reset', vtableSlot(client, SLOT.Reset), controlHook('Reset'));
  }

  function hookDevice(device) {
    hook('wasapi', 'IMMDevice::Activate', vtableSlot(device, SLOT.Activate), {
      onEnter(args) { this.iid = args[1]; this.ppv = args[4]; },
      onLeave(ret) {
        if (failed(ret.toInt32())) return;
        if (AUDIO_CLIENT_IIDS.some((iid) => guidEquals(this.iid, iid))) {
          hookAudioClient(this.ppv.readPointer());
        }
      },
    });
  }

  function hookCollection(collection) {
    hook('wasapi', 'IMMDeviceCollection::Item', vtableSlot(collection, SLOT.Item), {
      onEnter(args) { this.ppDevice = args[2]; },
      onLeave(ret) { if (!failed(ret.toInt32())) hookDevice(this.ppDevice.readPointer()); },
    });
  }

  function hookEnumerator(enumerator) {
    hook('wasapi', 'IMMDeviceEnumerator::GetDefaultAudioEndpoint',
      vtableSlot(enumerator, SLOT.GetDefaultAudioEndpoint), {
        onEnter(args) { this.ppDevice = args[3]; },
        onLeave(ret) { if (!failed(ret.toInt32())) hookDevice(this.ppDevice.readPointer()); },
      });
    hook('wasapi', 'IMMDeviceEnumerator::GetDevice', vtableSlot(enumerator, SLOT.GetDevice), {
      onEnter(args) { this.ppDevice = args[2]; },
      onLeave(ret) { if (!failed(ret.toInt32())) hookDevice(this.ppDevice.readPointer()); },
    });
    hook('wasapi', 'IMMDeviceEnumerator::EnumAudioEndpoints',
      vtableSlot(enumerator, SLOT.EnumAudioEndpoints), {
        onEnter(args) { this.ppCollection = args[3]; },
        onLeave(ret) {
          if (!failed(ret.toInt32())) hookCollection(this.ppCollection.readPointer());
        },
      });
  }

  const coCreate = resolve('CoCreateInstance');
  hook('wasapi', 'CoCreateInstance', coCreate, {
    onEnter(args) { this.clsid = args[0]; this.riid = args[3]; this.ppv = args[4]; },
    onLeave(ret) {
      if (failed(ret.toInt32()) || !guidEquals(this.clsid, WASAPI.CLSID_MMDeviceEnumerator)) return;
      if (guidEquals(this.riid, WASAPI.IID_IMMDeviceEnumerator)) {
        hookEnumerator(this.ppv.readPointer());
      }
    },
  });
  // CoCreateInstanceEx(clsid, outer, clsctx, server, count, MULTI_QI *results):
  // MULTI_QI = {const IID *pIID; IUnknown *pItf; HRESULT hr}.
  const coCreateEx = resolve('CoCreateInstanceEx');
  if (coCreateEx !== null) {
    hook('wasapi', 'CoCreateInstanceEx', coCreateEx, {
      onEnter(args) { this.clsid = args[0]; this.count = args[4].toUInt32(); this.results = args[5]; },
      onLeave(ret) {
        if (failed(ret.toInt32()) || !guidEquals(this.clsid, WASAPI.CLSID_MMDeviceEnumerator)) return;
        const stride = Process.pointerSize * 3;
        for (let i = 0; i < this.count; i++) {
          const qi = this.results.add(i * stride);
          const itf = qi.add(Process.pointerSize).readPointer();
          if (qi.add(2 * Process.pointerSize).readS32() >= 0 && !itf.isNull() &&
              guidEquals(qi.readPointer(), WASAPI.IID_IMMDeviceEnumerator)) {
            hookEnumerator(itf);
          }
        }
      },
    });
  }

  // Walk the chain once ourselves (see the header); returns what it found.
  function probe() {
    const fns = {};
    for (const name of ['CoInitializeEx', 'CoUninitialize', 'CoTaskMemFree']) {
      fns[name] = resolve(name);
      if (fns[name] === null) return { ok: false, error: name + ' not found' };
    }
    const coInit = new NativeFunction(fns.CoInitializeEx, 'int', ['pointer', 'uint32'], wasapiAbi());
    const coUninit = new NativeFunction(fns.CoUninitialize, 'void', [], wasapiAbi());
    const memFree = new NativeFunction(fns.CoTaskMemFree, 'void', ['pointer'], wasapiAbi());
    const create = new NativeFunction(coCreate, 'int',
      ['pointer', 'pointer', 'uint32', 'pointer', 'pointer'], wasapiAbi());
    const out = Memory.alloc(Process.pointerSize);
    const result = { ok: false, steps: [] };
    const held = [];
    const tid = Process.getCurrentThreadId();
    internal.add(tid);
    const initHr = coInit(ptr(0), 0 /* COINIT_MULTITHREADED */);
    function step(name, hr) {
      result.steps.push({ step: name, hr: '0x' + (hr >>> 0).toString(16) });
      return !failed(hr);
    }
    try {
      out.writePointer(ptr(0));
      if (!step('CoCreateInstance', create(allocGuid(WASAPI.CLSID_MMDeviceEnumerator), ptr(0),
        CLSCTX_ALL, allocGuid(WASAPI.IID_IMMDeviceEnumerator), out))) return result;
      const enumerator = out.readPointer();
      held.push(enumerator);
      if (!step('GetDefaultAudioEndpoint', method(enumerator, SLOT.GetDefaultAudioEndpoint,
        'int', ['int', 'int', 'pointer'])(enumerator, E_CAPTURE, 0, out))) return result;
      const device = out.readPointer();
      held.push(device);
      if (!step('Activate', method(device, SLOT.Activate, 'int',
        ['pointer', 'uint32', 'pointer', 'pointer'])(device, allocGuid(WASAPI.IID_IAudioClient),
        CLSCTX_ALL, ptr(0), out))) return result;
      const client = out.readPointer();
      held.push(client);
      if (!step('GetMixFormat', method(client, SLOT.GetMixFormat, 'int', ['pointer'])(
        client, out))) return result;
      const format = out.readPointer();
      probeFormat = parseWaveFormat(format);
      result.format = probeFormat;
      const initHr2 = method(client, SLOT.Initialize, 'int',
        ['int', 'uint32', 'int64', 'int64', 'pointer', 'pointer'])(
        client, 0 /* shared */, 0, 200000 /* 20 ms in 100 ns */, 0, format, ptr(0));
      memFree(format);
      if (!step('Initialize', initHr2)) return result;
      if (!step('GetService', method(client, SLOT.GetService, 'int', ['pointer', 'pointer'])(
        client, allocGuid(WASAPI.IID_IAudioCaptureClient), out))) return result;
      held.push(out.readPointer());
      result.ok = true;
      return result;
    } finally {
      for (const obj of held.reverse()) release(obj);
      if (initHr >= 0) coUninit(); // S_OK or S_FALSE: ours to balance
      internal.delete(tid);
      result.hooks = Array.from(hooked.values());
    }
  }

  return { probe: probe, clients: clients };
}

// The GetBuffer row from the out-parameters the call filled (`call` holds the pointers that
// were passed: ppData, pFrames, pFlags, pPosition, self, t).
function getBufferRow(call, owners, formatOf) {
  const frames = call.pFrames.readU32();
  const flags = call.pFlags.isNull() ? 0 : call.pFlags.readU32();
  const silent = (flags & AUDCLNT_BUFFERFLAGS_SILENT) !== 0;
  const client = owners.get(call.self.toString()) || null;
  const [format, formatSource] = formatOf(client);
  const bytes = format === null ? null : frames * format.blockAlign;
  // SILENT: "treat all of the data in the packet as silence and ignore the actual data
  // values" - the app got no samples, so there is nothing to measure.
  const lv = silent || bytes === null ? [null, null]
    : levels(call.ppData.readPointer(), bytes, format.layout);
  return row('wasapi:GetBuffer', 'read', call.t, Process.getCurrentThreadId(), {
    frames: frames,
    bytes: bytes,
    peak: lv[0],
    rms: lv[1],
    flags: decodeFlags(flags, BUFFER_FLAGS),
    silent: silent,
    device_position: call.pPosition.isNull() ? null : call.pPosition.readU64().toNumber(),
    client: client,
    format_source: formatSource,
  });
}

function windowsResolver(name) {
  for (const module of ['combase.dll', 'ole32.dll']) {
    const m = findModule(module);
    if (m !== null) {
      const address = m.findExportByName(name);
      if (address !== null) return address;
    }
  }
  return null;
}

let wasapi = null;
if (Process.platform === 'windows') {
  if (windowsResolver('CoCreateInstance') === null) {
    reportPlatform('wasapi', false, 'combase.dll/ole32.dll not loaded: no COM in this process');
  } else {
    wasapi = installWasapi(windowsResolver);
    reportPlatform('wasapi', true);
  }
} else {
  reportPlatform('wasapi', false, 'WASAPI exists only on Windows; this process runs on ' +
    Process.platform);
}

rpc.exports.probe = function () {
  if (wasapi === null) return { ok: false, error: 'WASAPI is not available in this process' };
  return wasapi.probe();
};
