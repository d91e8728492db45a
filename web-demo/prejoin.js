// The pre-join screen's devices: camera and microphone pickers (enumerateDevices), a local
// preview, and a microphone level meter (WebAudio AnalyserNode). The stream it holds is
// handed to the call on join, so the call starts with the devices the user chose.

// Plain words for getUserMedia's errors.
export function mediaErrorText(e) {
  switch (e?.name) {
    case 'NotAllowedError':
      return 'Camera and microphone access was denied. Allow it in the browser (the icon in the address bar) to be seen and heard; you can still join to watch and listen.';
    case 'NotFoundError':
      return 'No camera or microphone was found. You can still join to watch and listen.';
    case 'NotReadableError':
      return 'The camera or microphone is in use by another application.';
    case 'OverconstrainedError':
      return 'The chosen device is not available any more.';
    default:
      return `Camera/microphone: ${e?.message || e}`;
  }
}

export class Devices {
  constructor({ video, camSelect, micSelect, meter, onError }) {
    this.video = video;
    this.camSelect = camSelect;
    this.micSelect = micSelect;
    this.meter = meter; // element with a child bar; width follows the level
    this.onError = onError;
    this.stream = null;
    this.ready = Promise.resolve();
    this.audioCtx = null;
    this.raf = 0;
    this.level = 0; // 0..1, last measured (read by the tests)
    this.peak = 0; // highest level seen since the meter started
    camSelect.addEventListener('change', () => this.open());
    micSelect.addEventListener('change', () => this.open());
    navigator.mediaDevices?.addEventListener?.('devicechange', () => this.list());
  }

  // Opens the chosen devices (or the defaults) and fills the pickers; `ready` settles
  // when done, so that joining waits for a permission prompt the user has not answered.
  open() {
    this.ready = this.openNow().catch((e) => this.onError(`Camera/microphone: ${e.message || e}`));
    return this.ready;
  }

  async openNow() {
    const cam = this.camSelect.value;
    const mic = this.micSelect.value;
    this.release();
    const want = {
      audio: mic ? { deviceId: { exact: mic } } : true,
      video: { width: 1280, height: 720, ...(cam ? { deviceId: { exact: cam } } : {}) },
    };
    let stream = null;
    let error = null;
    for (const c of [want, { audio: want.audio }, { video: want.video }]) {
      try {
        stream = await navigator.mediaDevices.getUserMedia(c);
        break;
      } catch (e) {
        error = error || e;
        if (e.name === 'NotAllowedError') break; // asking again will not help
      }
    }
    this.stream = stream;
    this.video.srcObject = stream;
    this.video.closest('.preview')?.classList.toggle('no-video', !stream?.getVideoTracks().length);
    if (error && !(stream?.getAudioTracks().length && stream?.getVideoTracks().length)) {
      this.onError(mediaErrorText(error));
    } else {
      this.onError('');
    }
    await this.list();
    this.startMeter();
    return stream;
  }

  // Fills the pickers; labels are only known once access was granted.
  async list() {
    const all = await navigator.mediaDevices.enumerateDevices();
    const fill = (select, kind, track) => {
      const current = track?.getSettings().deviceId || select.value;
      const devices = all.filter((d) => d.kind === kind && d.deviceId);
      select.replaceChildren(...devices.map((d, i) => {
        const o = document.createElement('option');
        o.value = d.deviceId;
        o.textContent = d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`;
        o.selected = d.deviceId === current;
        return o;
      }));
      if (!devices.length) {
        const o = document.createElement('option');
        o.value = '';
        o.textContent = kind === 'videoinput' ? 'No camera' : 'No microphone';
        select.append(o);
      }
      select.disabled = devices.length === 0;
    };
    fill(this.camSelect, 'videoinput', this.stream?.getVideoTracks()[0]);
    fill(this.micSelect, 'audioinput', this.stream?.getAudioTracks()[0]);
  }

  startMeter() {
    cancelAnimationFrame(this.raf);
    const track = this.stream?.getAudioTracks()[0];
    const bar = this.meter.firstElementChild;
    if (!track) {
      bar.style.width = '0';
      return;
    }
    this.audioCtx ||= new AudioContext();
    this.audioCtx.resume().catch(() => {});
    const source = this.audioCtx.createMediaStreamSource(new MediaStream([track]));
    const analyser = this.audioCtx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      // RMS in dBFS, shown from -60 dB (silence) to 0 dB (full scale).
      const db = 10 * Math.log10(sum / samples.length + 1e-12);
      this.level = Math.max(0, Math.min(1, (db + 60) / 60));
      this.peak = Math.max(this.peak, this.level);
      bar.style.width = `${Math.round(this.level * 100)}%`;
      this.meter.setAttribute('aria-valuenow', String(Math.round(this.level * 100)));
      this.raf = requestAnimationFrame(tick);
    };
    this.source = source;
    tick();
  }

  // Gives the stream to the call; the pre-join screen no longer owns it.
  take() {
    cancelAnimationFrame(this.raf);
    this.source?.disconnect();
    const s = this.stream;
    this.stream = null;
    this.video.srcObject = null;
    return s;
  }

  release() {
    cancelAnimationFrame(this.raf);
    this.source?.disconnect();
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
  }
}
