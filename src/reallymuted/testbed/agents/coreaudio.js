// Frida 17 agent, macOS: every CoreAudio capture call an app makes (loaded after
// native_core.js).
//
// Two layers deliver microphone samples to an app on macOS, and both are hooked:
//
// * the HAL: the app registers an IOProc on a device (AudioDeviceCreateIOProcID, its block
//   variant, or the deprecated AudioDeviceAddIOProc) and starts it (AudioDeviceStart); the
//   HAL then calls the IOProc every I/O cycle with the input samples in `inInputData`. The
//   agent attaches to each IOProc (or block invoke function) as it is registered.
// * Audio units (AUHAL, VoiceProcessingIO, and AVAudioEngine on top of them): the app pulls
//   input with AudioUnitRender on the unit's input element (bus 1). Its render action flags
//   carry kAudioUnitRenderAction_OutputIsSilence, the nearest CoreAudio has to WASAPI's
//   SILENT flag.
//
// Rows (see native_core.js `row`):
//   coreaudio:IOProc           kind read: frames, bytes, peak/rms of inInputData, buffers,
//                              device (reads with no input buffers, output-only, are skipped);
//   coreaudio:AudioUnitRender  kind read: frames, bytes, peak/rms of ioData after the call,
//                              flags (render action names), silent, bus, unit;
//   coreaudio:AudioDeviceStart / coreaudio:AudioDeviceStop / coreaudio:AudioDeviceCreateIOProcID
//                              kind call: device, proc.
// An IOProc registered before the tracer attached cannot be found (the HAL has no list of
// them): the host runner attaches before the app joins, and AudioUnitRender is hooked by
// address, so units set up earlier are still seen.
'use strict';

const kAudioUnitProperty_StreamFormat = 8;
const kAudioUnitScope_Output = 2;
const kAudioDevicePropertyStreamFormat = 0x73666D74; // 'sfmt'
const kAudioDevicePropertyScopeInput = 0x696E7074; // 'inpt'
const INPUT_BUS = 1;

const RENDER_FLAGS = [
  [1 << 2, 'PreRender'],
  [1 << 3, 'PostRender'],
  [1 << 4, 'OutputIsSilence'],
  [1 << 5, 'Preflight'],
  [1 << 6, 'Render'],
  [1 << 7, 'Complete'],
  [1 << 8, 'PostRenderError'],
  [1 << 9, 'DoNotCheckRenderArgs'],
];
const kAudioUnitRenderAction_OutputIsSilence = 1 << 4;

// `resolve(name)` gives the address of an exported function or null: the real CoreAudio and
// AudioToolbox exports in an app, stand-ins in the Linux self-test.
function installCoreAudio(resolve) {
  const deviceFormats = new Map(); // AudioObjectID -> parseASBD result (or null)
  const unitFormats = new Map(); // AudioUnit -> parseASBD result (or null)
  const blockDevices = new Map(); // block literal -> AudioObjectID
  const getProperty = resolve('AudioObjectGetPropertyData');
  const unitGetProperty = resolve('AudioUnitGetProperty');

  function deviceFormat(device) {
    if (deviceFormats.has(device)) return deviceFormats.get(device);
    let format = null;
    if (getProperty !== null) {
      const fn = new NativeFunction(getProperty, 'int',
        ['uint32', 'pointer', 'uint32', 'pointer', 'pointer', 'pointer']);
      const address = Memory.alloc(12);
      address.writeU32(kAudioDevicePropertyStreamFormat);
      address.add(4).writeU32(kAudioDevicePropertyScopeInput);
      address.add(8).writeU32(0); // kAudioObjectPropertyElementMain
      const size = Memory.alloc(4);
      size.writeU32(40);
      const asbd = Memory.alloc(40);
      if (fn(device, address, 0, ptr(0), size, asbd) === 0) format = parseASBD(asbd);
    }
    deviceFormats.set(device, format);
    return format;
  }

  function unitFormat(unit) {
    const key = unit.toString();
    if (unitFormats.has(key)) return unitFormats.get(key);
    let format = null;
    if (unitGetProperty !== null) {
      const fn = new NativeFunction(unitGetProperty, 'int',
        ['pointer', 'uint32', 'uint32', 'uint32', 'pointer', 'pointer']);
      const size = Memory.alloc(4);
      size.writeU32(40);
      const asbd = Memory.alloc(40);
      if (fn(unit, kAudioUnitProperty_StreamFormat, kAudioUnitScope_Output, INPUT_BUS, asbd,
        size) === 0) format = parseASBD(asbd);
    }
    unitFormats.set(key, format);
    return format;
  }

  function ioRow(t, device, inputData) {
    const lv = bufferListLevels(inputData, deviceFormat(device));
    if (lv.buffers === 0 || lv.bytes === 0) return null; // an output-only cycle
    return row('coreaudio:IOProc', 'read', t, Process.getCurrentThreadId(), {
      frames: lv.frames, bytes: lv.bytes, peak: lv.peak, rms: lv.rms,
      buffers: lv.buffers, device: device,
    });
  }

  // IOProc(inDevice, inNow, inInputData, inInputTime, outOutputData, inOutputTime, client)
  function hookIOProc(proc) {
    hook('coreaudio', 'IOProc ' + proc, proc, {
      onEnter(args) {
        const r = ioRow(clock.now(), args[0].toUInt32(), args[2]);
        if (r !== null) emit(r);
      },
    });
  }

  // Block literal {isa, int flags, int reserved, invoke, ...}: invoke(block, inNow,
  // inInputData, inInputTime, outOutputData, inOutputTime).
  function hookIOBlock(block, device) {
    blockDevices.set(block.toString(), device);
    const invoke = block.add(Process.pointerSize + 8).readPointer();
    hook('coreaudio', 'IOBlock ' + invoke, invoke, {
      onEnter(args) {
        const dev = blockDevices.get(args[0].toString());
        if (dev === undefined) return;
        const r = ioRow(clock.now(), dev, args[2]);
        if (r !== null) emit(r);
      },
    });
  }

  function callRow(name, t, fields) {
    emit(row('coreaudio:' + name, 'call', t, Process.getCurrentThreadId(), fields));
  }

  hook('coreaudio', 'AudioDeviceCreateIOProcID', resolve('AudioDeviceCreateIOProcID'), {
    onEnter(args) {
      this.t = clock.now();
      this.device = args[0].toUInt32();
      this.proc = args[1];
      this.out = args[3];
    },
    onLeave(ret) {
      if (ret.toInt32() !== 0) return;
      hookIOProc(this.proc);
      callRow('AudioDeviceCreateIOProcID', this.t, {
        device: this.device, proc: this.out.readPointer().toString(),
      });
    },
  });
  const withBlock = resolve('AudioDeviceCreateIOProcIDWithBlock');
  if (withBlock !== null) {
    // (AudioDeviceIOProcID *out, AudioObjectID device, dispatch_queue_t queue, block)
    hook('coreaudio', 'AudioDeviceCreateIOProcIDWithBlock', withBlock, {
      onEnter(args) {
        this.t = clock.now();
        this.out = args[0];
        this.device = args[1].toUInt32();
        this.block = args[3];
      },
      onLeave(ret) {
        if (ret.toInt32() !== 0 || this.block.isNull()) return;
        hookIOBlock(this.block, this.device);
        callRow('AudioDeviceCreateIOProcID', this.t, {
          device: this.device, proc: this.out.readPointer().toString(), block: true,
        });
      },
    });
  }
  const addIOProc = resolve('AudioDeviceAddIOProc');
  if (addIOProc !== null) {
    hook('coreaudio', 'AudioDeviceAddIOProc', addIOProc, {
      onEnter(args) { this.proc = args[1]; },
      onLeave(ret) { if (ret.toInt32() === 0) hookIOProc(this.proc); },
    });
  }
  for (const name of ['AudioDeviceStart', 'AudioDeviceStop']) {
    hook('coreaudio', name, resolve(name), {
      onEnter(args) {
        this.t = clock.now();
        this.device = args[0].toUInt32();
        this.proc = args[1];
      },
      onLeave(ret) {
        callRow(name, this.t, {
          device: this.device, proc: this.proc.toString(), status: ret.toInt32(),
        });
      },
    });
  }
  // AudioUnitRender(unit, AudioUnitRenderActionFlags *ioActionFlags, const AudioTimeStamp *,
  //                 UInt32 inOutputBusNumber, UInt32 inNumberFrames, AudioBufferList *ioData)
  hook('coreaudio', 'AudioUnitRender', resolve('AudioUnitRender'), {
    onEnter(args) {
      this.t = clock.now();
      this.unit = args[0];
      this.flags = args[1];
      this.bus = args[3].toUInt32();
      this.frames = args[4].toUInt32();
      this.data = args[5];
    },
    onLeave(ret) {
      if (ret.toInt32() !== 0 || this.bus !== INPUT_BUS) return;
      const flags = this.flags.isNull() ? 0 : this.flags.readU32();
      const silent = (flags & kAudioUnitRenderAction_OutputIsSilence) !== 0;
      const lv = bufferListLevels(this.data, unitFormat(this.unit));
      emit(row('coreaudio:AudioUnitRender', 'read', this.t, Process.getCurrentThreadId(), {
        frames: this.frames, bytes: lv.bytes, peak: lv.peak, rms: lv.rms,
        flags: decodeFlags(flags, RENDER_FLAGS), silent: silent, bus: this.bus,
        unit: this.unit.toString(),
      }));
    },
  });
  return { deviceFormats: deviceFormats, unitFormats: unitFormats };
}

function darwinResolver(name) {
  return Module.findGlobalExportByName(name);
}

let coreaudio = null;
if (Process.platform === 'darwin') {
  if (darwinResolver('AudioDeviceStart') === null) {
    reportPlatform('coreaudio', false, 'CoreAudio.framework is not loaded in this process yet');
  } else {
    coreaudio = installCoreAudio(darwinResolver);
    reportPlatform('coreaudio', true);
  }
  // Frameworks loaded later (AudioToolbox on first use): hook what they bring. hook() attaches
  // each address once, so installing again only adds what was missing.
  Process.attachModuleObserver({
    onAdded(module) {
      if (module.name === 'CoreAudio' || module.name === 'AudioToolbox') {
        const first = coreaudio === null;
        coreaudio = installCoreAudio(darwinResolver);
        if (first) reportPlatform('coreaudio', true);
      }
    },
  });
} else {
  reportPlatform('coreaudio', false, 'CoreAudio exists only on macOS; this process runs on ' +
    Process.platform);
}

rpc.exports.probe = function () {
  return { ok: coreaudio !== null, note: 'CoreAudio hooks are on exports: nothing to probe' };
};
