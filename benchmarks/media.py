"""Decoding throughput: an 8 s clip into Synchformer frames + audio, our PyAV path vs the ffmpeg CLI.

The work, for each clip (default: the six VGGSound fixture clips, 10 s, 30 fps, 44.1 kHz AAC; 8 s
from 1.0 s): video at 25 fps (``SYNC_FPS``), short side resized to 224 with an antialiased bicubic
filter and centre-cropped to 224×224, RGB24 (200 frames); audio downmixed to mono and resampled to
16 kHz (the ``s16k`` preset) with a 64-zero-crossing Kaiser-windowed sinc (128 000 samples).

* **ours**: :func:`reasonaudio.media.load_video` (``size=224``) + :func:`reasonaudio.media.load_audio`,
  as ``reasonaudio.data_modules.clips.ClipDataset`` calls them;
* **ffmpeg**: one ``ffmpeg -threads 1 -filter_threads 1 -ss … -t 8 -i clip`` process with two
  outputs: ``fps=25:round=up,scale=W:H:flags=bicubic,crop=224:224`` as rawvideo rgb24 to a pipe,
  and the channel mean (``pan``) resampled by ``aresample=16000`` with swresample's Kaiser sinc at
  the same length, cut-off and β (``filter_size=64:cutoff=0.9475:kaiser_beta=14.77``), mono f32le
  to a RAM-disk file; the time includes reading both back into arrays.

Both run on ONE core: the process is pinned with ``sched_setaffinity`` (ffmpeg inherits the mask),
so PyAV's decoder, whose automatic thread count follows the affinity mask, and torch (set to 1
intra-op thread) cannot use a second core, and ffmpeg is told ``-threads 1``. CPU seconds
(user + sys) are reported next to wall seconds as a check. The two alternate, medians of
``--repeats`` after a warm-up of each. The outputs are compared too (frame count, PSNR of ours
against ffmpeg's frames, SNR of our audio against ffmpeg's), to show the two do the same work;
they are not bit-identical (different resize kernels and resamplers round differently).

Our resize runs on uint8 frames with torch's native antialiased bicubic kernel (the one
torchvision's ``v2.Resize`` uses for uint8 tensors). Resizing in float32, as ``media.py`` did
before, took 0.95 s for 0nib7bMm8BA_000015 against ffmpeg's 0.34 s (2.8×; the resize alone was
0.62 s of it); the uint8 kernel brought the whole clip to about 0.3 s.

Usage::

    .venv/bin/python benchmarks/media.py                  # writes docs/benchmarks.md
    .venv/bin/python benchmarks/media.py --clips my.mp4 --no-write

Replaces the section "## Media decoding (CPU)" of ``docs/benchmarks.md`` unless ``--no-write``, and
ends with the line ``media decode ours/ffmpeg: <ratio>`` (total wall time over all clips). Exit
status 1 when the ratio exceeds ``--max-ratio`` (1.5, the issue's requirement), 2 when ffmpeg is missing.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reasonaudio.config import SYNC_FPS, audio_preset
from reasonaudio.media import load_audio, load_video, probe

from report import DOC, cpu_name, write_section  # benchmarks/ is the script folder, so this resolves

SECTION = "## Media decoding (CPU)"
FIXTURES_ENV = "REASONAUDIO_FIXTURES"
SIZE = 224
SAMPLE_RATE = audio_preset("s16k").sample_rate
# swresample's sinc at the settings of reasonaudio.media.audio._RESAMPLE_KW
# (kaiser_best: 64 zero crossings, roll-off 0.9475)
ARESAMPLE = f"aresample={SAMPLE_RATE}:filter_size=64:cutoff=0.9475:filter_type=kaiser:kaiser_beta=14.77"


@dataclass
class Timing:
    wall: float
    cpu: float


@dataclass
class Row:
    """Medians for one clip and how close the two outputs are."""

    clip: str
    source: str
    ours: Timing
    ffmpeg: Timing
    frames: int
    psnr_db: float
    audio_snr_db: float

    @property
    def ratio(self) -> float:
        return self.ours.wall / self.ffmpeg.wall


def default_clips() -> list[Path]:
    """The VGGSound fixture clips, or an 8 s 640×360 clip written with PyAV when the fixtures are absent."""
    root = Path(os.environ.get(FIXTURES_ENV) or Path(__file__).resolve().parents[2] / "shared" / "fixtures")
    clips = sorted((root / "media" / "vggsound").glob("*.mp4"))
    return clips or [synthetic_clip(Path(tempfile.mkdtemp()) / "synthetic_640x360.mp4")]


def synthetic_clip(path: Path, seconds: float = 9.0, fps: int = 30, size: tuple[int, int] = (360, 640)) -> Path:
    """A moving-gradient H.264 clip with 44.1 kHz stereo AAC (noise-like, so neither codec idles)."""
    import av

    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "23", "preset": "veryfast"}
        audio = c.add_stream("aac", rate=44100, layout="stereo")
        for i in range(int(seconds * fps)):
            img = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1).astype(np.uint8)
            img = np.clip(img + rng.integers(0, 24, img.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for pkt in vs.encode(frame):
                c.mux(pkt)
        for pkt in vs.encode(None):
            c.mux(pkt)
        wav = (0.3 * rng.standard_normal((2, int(seconds * 44100)))).astype(np.float32).clip(-1, 1)
        for i in range(0, wav.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[:, i:i + 1024]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 44100, i
            for pkt in audio.encode(frame):
                c.mux(pkt)
        for pkt in audio.encode(None):
            c.mux(pkt)
    return path


def scaled_size(width: int, height: int) -> tuple[int, int]:
    """``media.resize_short_side_crop``'s resize before the crop: short side → 224, long side rounded."""
    scale = SIZE / min(width, height)
    return max(SIZE, round(width * scale)), max(SIZE, round(height * scale))


def ffmpeg_command(ffmpeg: str, clip: Path, start: float, duration: float, audio_out: Path) -> list[str]:
    """One ffmpeg process doing the work of :func:`run_ours`.

    ``fps=25:round=up`` is our frame rule (each instant shows the last frame that started at or before
    it); ``pan`` is our downmix (the plain channel mean; ``-ac 1`` would weight channels differently).
    """
    info = probe(clip)
    v = info.video
    width, height = (v.height, v.width) if v.rotation in (90, 270) else (v.width, v.height)
    sw, sh = scaled_size(width, height)
    video = (f"fps={SYNC_FPS}:round=up,scale={sw}:{sh}:flags=bicubic,"
             f"crop={SIZE}:{SIZE}:{(sw - SIZE) // 2}:{(sh - SIZE) // 2}")
    n = info.audio.channels
    audio = ARESAMPLE if n == 1 else f"pan=mono|c0={'+'.join(f'{1 / n:.8g}*c{i}' for i in range(n))},{ARESAMPLE}"
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", "-filter_threads", "1",
            "-ss", f"{start}", "-t", f"{duration}", "-i", str(clip),
            "-map", "0:v:0", "-vf", video, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
            "-map", "0:a:0", "-af", audio, "-f", "f32le", "-y", str(audio_out)]


def run_ffmpeg(cmd: list[str], audio_out: Path) -> tuple[np.ndarray, np.ndarray]:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    frames = np.frombuffer(proc.stdout, np.uint8).reshape(-1, SIZE, SIZE, 3)
    return frames, np.fromfile(audio_out, np.float32)


def run_ours(clip: Path, start: float, duration: float) -> tuple[torch.Tensor, torch.Tensor]:
    video = load_video(clip, SYNC_FPS, start=start, duration=duration, size=SIZE)
    audio = load_audio(clip, SAMPLE_RATE, start=start, duration=duration)
    return video.frames, audio.wav


def timed(fn) -> tuple[Timing, object]:
    """Wall and CPU seconds of ``fn()`` (CPU of this process and of the children it waited for)."""
    t0, r0 = time.perf_counter(), os.times()
    out = fn()
    wall, r1 = time.perf_counter() - t0, os.times()
    cpu = sum(getattr(r1, k) - getattr(r0, k) for k in ("user", "system", "children_user", "children_system"))
    return Timing(wall, cpu), out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")


def snr(x: np.ndarray, reference: np.ndarray) -> float:
    noise = float(np.sum((x.astype(np.float64) - reference) ** 2))
    return 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise) if noise > 0 else float("inf")


def measure(clip: Path, ffmpeg: str, args: argparse.Namespace, scratch: Path) -> Row:
    audio_out = scratch / "audio.f32"
    cmd = ffmpeg_command(ffmpeg, clip, args.start, args.duration, audio_out)
    ours_runs, ffmpeg_runs = [], []
    _, (ours_frames, ours_wav) = timed(lambda: run_ours(clip, args.start, args.duration))  # warm-up
    _, (ff_frames, ff_wav) = timed(lambda: run_ffmpeg(cmd, audio_out))
    for rep in range(args.repeats):
        order = ("ours", "ffmpeg") if rep % 2 == 0 else ("ffmpeg", "ours")  # alternate against load drift
        for name in order:
            if name == "ours":
                ours_runs.append(timed(lambda: run_ours(clip, args.start, args.duration))[0])
            else:
                ffmpeg_runs.append(timed(lambda: run_ffmpeg(cmd, audio_out))[0])
    n = min(len(ours_frames), len(ff_frames))
    m = min(len(ours_wav), len(ff_wav))
    info = probe(clip)
    return Row(clip=clip.name, source=f"{info.video.width}x{info.video.height} {info.video.fps:g} fps, "
                                      f"{info.audio.codec} {info.audio.sample_rate} Hz × {info.audio.channels}",
               ours=_median(ours_runs), ffmpeg=_median(ffmpeg_runs),
               frames=len(ours_frames) if len(ours_frames) == len(ff_frames) else -1,
               psnr_db=psnr(ours_frames[:n].numpy(), ff_frames[:n]),
               audio_snr_db=snr(ours_wav[:m].numpy(), ff_wav[:m]))


def _median(runs: list[Timing]) -> Timing:
    return Timing(statistics.median(r.wall for r in runs), statistics.median(r.cpu for r in runs))


def ffmpeg_version(ffmpeg: str) -> str:
    out = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=False).stdout
    match = re.match(r"ffmpeg version (\S+)", out)
    return match.group(1) if match else "unknown"


def markdown(rows: list[Row], ratio: float, args: argparse.Namespace, argv: list[str], ffmpeg: str,
             load: float) -> str:
    import av

    verdict = "within" if ratio <= args.max_ratio else "**over**"
    lines = [
        SECTION, "",
        f"`.venv/bin/python benchmarks/media.py{' ' + ' '.join(argv) if argv else ''}` on {cpu_name()} "
        f"({os.cpu_count()} cores, shared with other work; 1-min load average {load:.2f} at the start), both "
        f"sides pinned to one core. Work per clip: {args.duration:g} s from {args.start:g} s → "
        f"{round(args.duration * SYNC_FPS)} Synchformer frames ({SYNC_FPS} fps, short side → {SIZE} bicubic "
        f"antialiased, centre crop {SIZE}², RGB24) + mono {SAMPLE_RATE} Hz audio (Kaiser sinc, 64 zero "
        f"crossings). Ours = `reasonaudio.media.load_video` + `load_audio` (PyAV {av.__version__}, FFmpeg "
        f"libraries {'.'.join(map(str, av.library_versions['libavcodec']))} libavcodec, torch "
        f"{torch.__version__}, 1 intra-op thread); ffmpeg = the `ffmpeg` CLI {ffmpeg_version(ffmpeg)} "
        f"(`{ffmpeg}`) with `-threads 1 -filter_threads 1`, the same filters in one process, rawvideo to a "
        f"pipe and f32le audio to a RAM disk, read back into arrays. Medians of {args.repeats} alternating "
        f"runs after one warm-up each; CPU = user + sys seconds.",
        "",
        "| clip | source | ours wall s | ours CPU s | ffmpeg wall s | ffmpeg CPU s | ours / ffmpeg | frames | "
        "video PSNR ours vs ffmpeg dB | audio SNR ours vs ffmpeg dB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.clip} | {r.source} | {r.ours.wall:.3f} | {r.ours.cpu:.3f} | {r.ffmpeg.wall:.3f} | "
                     f"{r.ffmpeg.cpu:.3f} | {r.ratio:.2f} | {r.frames if r.frames >= 0 else 'differ'} | "
                     f"{r.psnr_db:.1f} | {r.audio_snr_db:.1f} |")
    total_ours = sum(r.ours.wall for r in rows)
    total_ff = sum(r.ffmpeg.wall for r in rows)
    lines += [
        "",
        f"Total wall time ours / ffmpeg: **{ratio:.2f}** ({total_ours:.2f} s / {total_ff:.2f} s), {verdict} the "
        f"required {args.max_ratio:g}×. The outputs agree (same frames, same samples) up to the rounding of "
        "two different bicubic kernels (swscale vs torch) and resamplers (swresample vs torchaudio), and the "
        "edges of the audio crop.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", type=Path, help="media files (default: the VGGSound fixtures)")
    parser.add_argument("--start", type=float, default=1.0, help="seconds into each clip")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-ratio", type=float, default=1.5, help="fail (exit 1) above this ours/ffmpeg ratio")
    parser.add_argument("--ffmpeg", default=shutil.which("ffmpeg") or "/usr/bin/ffmpeg")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC}")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.duration <= 0 or args.start < 0:
        parser.error(f"need repeats >= 1, duration > 0, start >= 0; got {vars(args)}")
    if not Path(args.ffmpeg).is_file():
        print(f"ffmpeg not found at {args.ffmpeg}: install the ffmpeg command-line tool (Debian: apt-get install "
              "ffmpeg) or pass --ffmpeg PATH", file=sys.stderr)
        return 2
    clips = args.clips or default_clips()
    for clip in clips:
        if not clip.is_file():
            parser.error(f"clip not found: {clip}")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    scratch_root = "/dev/shm" if Path("/dev/shm").is_dir() else None
    rows = []
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        for i, clip in enumerate(clips):
            rows.append(measure(clip, args.ffmpeg, args, Path(scratch)))
            print(f"[{i + 1}/{len(clips)}] {clip.name}: ours {rows[-1].ours.wall:.3f} s, "
                  f"ffmpeg {rows[-1].ffmpeg.wall:.3f} s", file=sys.stderr)
    ratio = sum(r.ours.wall for r in rows) / sum(r.ffmpeg.wall for r in rows)
    text = markdown(rows, ratio, args, argv, args.ffmpeg, load)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    print(f"media decode ours/ffmpeg: {ratio:.2f}")
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
