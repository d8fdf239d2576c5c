"""Procedurally generated audio-visual corpus with exact ground truth, for measuring every stage on a CPU.

Each clip is a small room seen from the front (``size`` × ``size`` pixels, 25 fps): a ceiling beam
at the top, a floor at the bottom and a wall on the right. One to three visible objects of distinct
types move in it and make an impact sound exactly when they touch a surface:

==========  ==========================================  ==================================================
type        motion and contact                          sound (``metrics.synthetic.TIMBRES``)
==========  ==========================================  ==================================================
``ball``    red disc bouncing on the floor (parabolic   "ping": damped sine at the pitch with weak 2nd
            flights under constant gravity)             and 3rd harmonics, decay 60–120 ms
``block``   blue square sliding on the floor and        "knock": white noise in a Gaussian log-frequency
            knocking against the right wall             band centred on the pitch, decay 15–35 ms
``bell``    golden bell on a rod, swinging from the     inharmonic partials (1, 1.59, 2.76, 4.07, 5.40 ×
            ceiling and striking a post on its right    pitch), upper ones decaying faster, decay 0.3–0.6 s
==========  ==========================================  ==================================================

Every impact starts with a 10 ms contact click (white noise decaying in 1 ms, 0.3 of the impact's
peak), as a real collision does; it is what makes a re-strike of a still-ringing bell a clear onset.

Visual → sound mapping, per object: a normalised size ``s`` in [0, 1] sets both the drawn size and
the pitch, log-linearly and inversely (bigger → lower: ball 860 → 380 Hz, block 800 → 220 Hz, bell
700 → 260 Hz) and lengthens the decay; the colour's lightness (0.3 → 0.7) is the ``brightness`` b in
[0, 1], a spectral tilt of ``(f / pitch) ** (-1.5 · (1 - b))`` on partial amplitudes and on the
noise band (darker → duller). Impacts after a longer flight or swing are louder (0.6 → 1.0); the
types are mixed at gains ball 0.8, block 1, bell 1.

Timing is exact by construction: every impact happens on the video frame grid (impact time =
``frame / fps``; frame ``k`` shows the scene at ``k / fps``), so the frame nearest an impact is the
frame of visual contact, and the audio impact starts at sample ``frame · sample_rate / fps`` (an
integer for 16 kHz and 44.1 kHz at 25 fps). Between two contacts the motion is a parabola (ball) or a
half sine (block distance from the wall, bell swing angle), zero exactly at the contacts. Impacts of
one object are 0.4–1.0 s apart, impacts of different objects at least ``MIN_GAP`` (120 ms, rounded
up to whole frames) apart, and no impact lies within 0.2 s of either end of the clip. The object is
already moving at frame 0 and still moving at the last frame; it never touches a surface silently.

Zero to two off-screen sources are heard but never seen, so only the text can name them: ``hum``
(50–120 Hz fundamental with 5 harmonics at 1/k, amplitude 0.06–0.12), ``rain`` (stationary
broadband noise, 300 Hz – 5 kHz, RMS 0.015–0.03) and ``beeps`` (a 1.2–2 kHz tone of 80–120 ms with
10 ms ramps every 0.35–0.8 s, amplitude 0.1–0.2), all relative to impact peaks of 0.6–1. The mono
mix is peak-normalised to ``PEAK`` (0.7).

Captions (``synthetic_captions.make_caption``) follow VGGSound-Think: a ``<HINT>`` that describes the sounds'
pitch, brightness, rhythm and background without naming any source, a grounding paragraph that ties
each sound to its visible object (size, colour, number of impacts, first impact time) or says it is
off-screen, and one ``<TRACK name='…' screen=on_screen|off_screen>`` with 4–6 keywords per source,
in the order of the ground truth's ``sources``. ``synthetic_captions.make_label`` gives the plain VGGSound-style
label of the same sources (``"ball bouncing, bell ringing, rain"``).

Determinism: clip ``index`` of a corpus with seed ``seed`` is drawn from
``numpy.random.default_rng([seed, index])``, so the same seed gives byte-identical frames and audio
and identical ground truth, and a corpus of N clips is a prefix of one of M > N clips.

Corpus layout written by :func:`synthesize_corpus` (paths in the manifest are relative to its
folder)::

    corpus.json          the arguments of synthesize_corpus that made the corpus
    manifest.jsonl       one JSON object per clip, in index order
    videos/<id>.mp4      H.264 yuv420p + AAC mono, 25 fps
    audio/<id>.wav       the ground-truth mono mix, 16-bit PCM at the preset's sample rate
    gt/<id>.json         the ground truth (the scene dict below)

Manifest row (the ``think_jsonl`` format of ``reasonaudio.data_modules.manifests``)::

    {"id": "synth_000000", "video": "videos/synth_000000.mp4", "audio": "audio/synth_000000.wav",
     "duration": 4.0, "caption": "<HINT>…</HINT> … <TRACK name='bouncing_ball' screen=on_screen>
     <KEYWORDS> ping, … </KEYWORDS> </TRACK> …", "label": "ball bouncing, electric hum",
     "ground_truth": "gt/synth_000000.json"}

Ground truth (the scene dict of :func:`sample_scene`; every renderer reads only this)::

    id, seed [seed, index], preset, sample_rate, num_samples (round(duration · sample_rate)), duration,
    fps, num_frames, size (frame side, px), peak,
    layout    {ceiling_y, floor_y, wall_x, pivot_x}: rows/columns in pixels (see _layout)
    sources   list, on-screen objects first, each with name, type, screen ("on_screen"/"off_screen"):
      on-screen: size (normalised, 0–1), pitch (Hz), decay (s), brightness, colour [r, g, b], gain,
                 geometry (pixels: ball radius/x; block side; bell rod/body/half_width/post_x),
                 reach (largest displacement: px, or degrees for the bell), contact_frames (one
                 virtual contact before and after the clip around the impacts), displacements (per
                 segment between contacts), impact_frames, impact_times (s), amplitudes,
                 noise_seed (clicks, knock noise), positions [[x, y] per frame, object centre],
                 angles (bell, degrees per frame)
      hum:   frequency, harmonics, phases, level      rain: level (RMS), noise_seed
      beeps: frequency, period, length, onsets (s), level

A scene edited by :func:`edit_impact` (never written to a corpus) also has ``mix_scale`` (the original's mix
gain) and, per on-screen source, ``impact_keys`` (each impact's noise key, its index in the original).
"""
from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reasonaudio.config import SequenceConfig, audio_preset
from reasonaudio.data_modules.clips import ClipDataModule, ClipRecord, rows_to_records
from reasonaudio.data_modules.manifests import read_think_jsonl
from reasonaudio.data_modules.synthetic_captions import make_caption, make_label
from reasonaudio.media import write_audio, write_video
from reasonaudio.synthetic_world import GT_FOLDER, TIMBRES, rain_spectrum, spectral_tilt

OBJECT_TYPES: tuple[str, ...] = ("ball", "block", "bell")
"""Visible object types, at most one of each per clip."""
OFFSCREEN_TYPES: tuple[str, ...] = ("hum", "rain", "beeps")
"""Off-screen source types, at most one of each per clip."""
PEAK = 0.7
"""Peak amplitude of every mix."""
EDGE = 0.2
"""No impact within this many seconds of either end of a clip."""
MIN_INTERVAL, MAX_INTERVAL = 0.4, 1.0
"""Seconds between two consecutive impacts of one object."""
MIN_GAP = 0.12
"""Seconds between impacts of different objects (rounded up to whole frames), so onsets stay separable."""

NAMES = {"ball": "bouncing_ball", "block": "sliding_block", "bell": "swinging_bell", "hum": "electric_hum",
         "rain": "rain", "beeps": "beeping_device"}
_HUES = {"ball": 0.0, "block": 0.6, "bell": 0.13}
_PITCH = {"ball": (860.0, 380.0), "block": (800.0, 220.0), "bell": (700.0, 260.0)}  # (smallest, biggest)
_DECAY = {"ball": (0.06, 0.12), "block": (0.015, 0.035), "bell": (0.3, 0.6)}  # (smallest, biggest)
_GAIN = {"ball": 0.8, "block": 1.0, "bell": 1.0}  # per-type loudness, so that no type masks another
_CLICK = 0.3  # contact click amplitude relative to the impact's peak
_REF_SEGMENT = 1.2  # s; a contact-to-contact segment this long reaches the full displacement
_BELL_SWING = 28.0  # degrees, the widest swing away from the post
_BG = {"wall_top": (52, 58, 78), "wall_bottom": (80, 86, 106), "floor": (112, 92, 72), "ceiling": (40, 40, 48),
       "side_wall": (122, 122, 130), "post": (156, 156, 166)}


def _layout(size: int) -> dict[str, int]:
    """Static room geometry in pixels: rows above ``ceiling_y`` are the beam, rows from ``floor_y`` the floor,
    columns from ``wall_x`` the right wall; the bell hangs from ``(pivot_x, ceiling_y)``."""
    return {"ceiling_y": round(0.06 * size), "floor_y": round(0.86 * size), "wall_x": round(0.94 * size),
            "pivot_x": round(0.68 * size)}


def _check_timing(duration: float, fps: int) -> int:
    """Validates the clip timing and returns the number of frames."""
    if not duration >= 1.0:
        raise ValueError(f"duration must be at least 1 s (impacts need 0.2 s margins), got {duration}")
    if fps != int(fps) or fps < 4:
        raise ValueError(f"fps must be an integer >= 4, got {fps}")
    frames = duration * fps
    if abs(frames - round(frames)) > 1e-6:
        raise ValueError(f"duration · fps must be a whole number of frames, got {duration} · {fps} = {frames}")
    return round(frames)


def _schedule(rng: np.random.Generator, num_frames: int, fps: int, taken: list[int]) -> list[int] | None:
    """Draws the contact frames of one object: a virtual contact before the clip, the impacts, a virtual
    contact after it. Impacts keep ``MIN_GAP`` from ``taken`` (other objects' impacts); ``None`` when no
    frame is free."""
    lo = math.floor(EDGE * fps) + 1
    hi = num_frames - 1 - lo
    shortest, longest = math.ceil(MIN_INTERVAL * fps), math.floor(MAX_INTERVAL * fps)
    gap = math.ceil(MIN_GAP * fps - 1e-9)

    def free(frame: int) -> int:
        while any(abs(frame - t) < gap for t in taken):
            frame += 1
        return frame

    first = free(int(rng.integers(lo, min(hi, lo + longest) + 1)))
    if first > hi:
        first = free(lo)
    if first > hi:
        return None
    impacts = [first]
    while (following := free(impacts[-1] + int(rng.integers(shortest, longest + 1)))) <= hi:
        impacts.append(following)
    # The contacts outside the clip keep the object moving at both ends without a silent touch.
    before = -int(rng.integers(1, shortest + 1))
    after = max(impacts[-1] + int(rng.integers(shortest, longest + 1)), num_frames)
    return [before, *impacts, after]


def _sample_object(kind: str, rng: np.random.Generator, size: int, layout: dict[str, int]) -> dict[str, Any]:
    """Draws the appearance, sound and geometry of one visible object (its timing comes later)."""
    s = float(rng.uniform())
    brightness = float(rng.uniform())
    hue = (_HUES[kind] + float(rng.uniform(-0.02, 0.02))) % 1.0
    colour = [round(255 * c) for c in colorsys.hls_to_rgb(hue, 0.3 + 0.4 * brightness, 0.75)]
    small, big = _PITCH[kind]
    short, long = _DECAY[kind]
    source: dict[str, Any] = {
        "name": NAMES[kind], "type": kind, "screen": "on_screen", "size": s,
        "pitch": small * (big / small) ** s, "decay": short + (long - short) * s, "brightness": brightness,
        "colour": colour, "gain": _GAIN[kind], "noise_seed": int(rng.integers(2**31)),
    }
    if kind == "ball":
        radius = (0.035 + 0.045 * s) * size
        # The centre sits on a pixel centre so that the lowest painted row touches the floor at contact.
        x = math.floor(float(rng.uniform(0.14, 0.30)) * size) + 0.5
        source["geometry"] = {"radius": radius, "x": x}
        source["reach"] = layout["floor_y"] - layout["ceiling_y"] - 2 * radius - 2
    elif kind == "block":
        source["geometry"] = {"side": max(2, round((0.10 + 0.08 * s) * size))}
        source["reach"] = 0.3 * size
    else:
        half_width = max(2, round((0.06 + 0.035 * s) * size))
        source["geometry"] = {"rod": 0.12 * size, "body": (0.14 + 0.08 * s) * size, "half_width": half_width,
                              "post_x": layout["pivot_x"] + half_width}
        source["reach"] = _BELL_SWING
    return source


def _sample_offscreen(kind: str, rng: np.random.Generator, duration: float) -> dict[str, Any]:
    """Draws the parameters of one off-screen source."""
    source: dict[str, Any] = {"name": NAMES[kind], "type": kind, "screen": "off_screen"}
    if kind == "hum":
        source.update(frequency=float(rng.uniform(50.0, 120.0)), harmonics=5,
                      phases=[float(p) for p in rng.uniform(0, 2 * np.pi, 5)], level=float(rng.uniform(0.06, 0.12)))
    elif kind == "rain":
        source.update(level=float(rng.uniform(0.015, 0.03)), noise_seed=int(rng.integers(2**31)))
    else:
        period = float(rng.uniform(0.35, 0.8))
        phase = float(rng.uniform(0.0, period))
        source.update(frequency=float(rng.uniform(1200.0, 2000.0)), period=period,
                      length=float(rng.uniform(0.08, 0.12)),
                      onsets=[float(t) for t in np.arange(phase, duration, period)],
                      level=float(rng.uniform(0.1, 0.2)))
    return source


def _displacement(source: dict[str, Any], frames: np.ndarray) -> np.ndarray:
    """Distance from the contact surface at (fractional) frame numbers: px for ball and block, degrees for the
    bell; exactly 0 at every contact frame."""
    contacts = np.asarray(source["contact_frames"], dtype=np.float64)
    k = np.clip(np.searchsorted(contacts, frames, side="right") - 1, 0, len(contacts) - 2)
    tau = (frames - contacts[k]) / (contacts[k + 1] - contacts[k])
    # A ball flies a parabola; the block and bell move out and back like a half period of a spring.
    shape = 4 * tau * (1 - tau) if source["type"] == "ball" else np.sin(np.pi * tau)
    return np.asarray(source["displacements"])[k] * shape


def _positions(source: dict[str, Any], layout: dict[str, int], num_frames: int) -> dict[str, list]:
    """Per-frame object centre (and bell angle) for the ground truth."""
    d = _displacement(source, np.arange(num_frames, dtype=np.float64))
    g = source["geometry"]
    if source["type"] == "ball":
        xy = np.stack([np.full(num_frames, g["x"]), layout["floor_y"] - g["radius"] - d], axis=1)
    elif source["type"] == "block":
        xy = np.stack([layout["wall_x"] - g["side"] / 2 - d, np.full(num_frames, layout["floor_y"] - g["side"] / 2)],
                      axis=1)
    else:
        reach = g["rod"] + g["body"] / 2
        phi = np.radians(d)
        xy = np.stack([layout["pivot_x"] - reach * np.sin(phi), layout["ceiling_y"] + reach * np.cos(phi)], axis=1)
    out = {"positions": np.round(xy, 3).tolist()}
    if source["type"] == "bell":
        out["angles"] = np.round(d, 3).tolist()
    return out


def sample_scene(seed: int, index: int = 0, duration: float = 4.0, preset: str = "tiny", size: int = 96,
                 fps: int = 25, objects: Sequence[str] | None = None,
                 offscreen: Sequence[str] | None = None) -> dict[str, Any]:
    """Draws one clip's scene: the complete ground truth from which frames, audio and captions are rendered.

    Args:
        seed: corpus seed (non-negative).
        index: clip index within the corpus (non-negative); the clip id is ``synth_<index:06d>``.
        duration: clip length in seconds (at least 1; ``duration · fps`` must be whole).
        preset: ``AudioConfig`` preset that sets the sample rate.
        size: frame height and width in pixels (even, at least 32).
        fps: video frame rate; impacts fall on its grid.
        objects: visible object types to use (subset of ``OBJECT_TYPES``); drawn at random when ``None``.
        offscreen: off-screen source types to use (subset of ``OFFSCREEN_TYPES``, may be empty); drawn at
            random when ``None``.

    Returns:
        The JSON-ready scene dict described in the module docstring.

    Raises:
        ValueError: on a bad argument.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be even and at least 32 (H.264 yuv420p), got {size}")
    num_frames = _check_timing(duration, fps)
    seq = SequenceConfig(duration=duration, audio=audio_preset(preset))
    rng = np.random.default_rng([seed, index])
    # The composition is drawn even when it is forced, so forcing it leaves the rest of the stream unchanged.
    drawn_objects = rng.choice(OBJECT_TYPES, size=int(rng.integers(1, 4)), replace=False).tolist()
    drawn_offscreen = rng.choice(OFFSCREEN_TYPES, size=int(rng.integers(0, 3)), replace=False).tolist()
    objects = drawn_objects if objects is None else list(objects)
    offscreen = drawn_offscreen if offscreen is None else list(offscreen)
    for kinds, allowed, what in ((objects, OBJECT_TYPES, "objects"), (offscreen, OFFSCREEN_TYPES, "offscreen")):
        if len(set(kinds)) != len(kinds) or not set(kinds) <= set(allowed):
            raise ValueError(f"{what} must be distinct members of {allowed}, got {kinds}")
    if not objects:
        raise ValueError("a clip needs at least one visible object")
    layout = _layout(size)
    sources, taken = [], []
    for kind in sorted(objects, key=OBJECT_TYPES.index):
        source = _sample_object(kind, rng, size, layout)
        contacts = _schedule(rng, num_frames, fps, taken)
        if contacts is None:  # every frame is taken by the other objects: leave this one out
            continue
        # Longer segments go further: a ball's flight height grows with the square of its time (constant
        # gravity); the block and bell swing wider with the square root, so short swings stay visible.
        lengths = [min(1.0, (after - before) / fps / _REF_SEGMENT) for before, after in zip(contacts, contacts[1:])]
        power = 2.0 if kind == "ball" else 0.5
        impacts = contacts[1:-1]
        source.update(
            contact_frames=contacts,
            displacements=[source["reach"] * length**power for length in lengths],
            impact_frames=impacts,
            impact_times=[f / fps for f in impacts],
            amplitudes=[0.6 + 0.4 * length for length in lengths[:-1]],
        )
        source.update(_positions(source, layout, num_frames))
        taken += impacts
        sources.append(source)
    sources += [_sample_offscreen(kind, rng, duration) for kind in sorted(offscreen, key=OFFSCREEN_TYPES.index)]
    return {
        "id": f"synth_{index:06d}", "seed": [seed, index], "preset": preset,
        "sample_rate": seq.audio.sample_rate, "num_samples": seq.valid_samples, "duration": duration,
        "fps": fps, "num_frames": num_frames, "size": size, "peak": PEAK, "layout": layout, "sources": sources,
    }


# --------------------------------------------------------------------------- audio


def _impact_sound(source: dict[str, Any], n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One impact of ``source`` rendered to the end of the clip (no truncation click), unit peak. # [n]"""
    t = np.arange(n) / sample_rate
    timbre = TIMBRES[source["type"]]
    pitch, decay, brightness = source["pitch"], source["decay"], source["brightness"]
    if timbre.noise_width > 0:
        ratio = np.maximum(np.fft.rfftfreq(n, 1 / sample_rate), 1.0) / pitch
        band = np.exp(-0.5 * (np.log(ratio) / timbre.noise_width) ** 2) * spectral_tilt(ratio, brightness)
        wave = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * band, n) * np.exp(-t / decay)
    else:
        wave = np.zeros(n)
        for ratio, amplitude, decay_factor in timbre.partials:
            if ratio * pitch < 0.45 * sample_rate:
                wave += (amplitude * spectral_tilt(ratio, brightness) * np.sin(2 * np.pi * ratio * pitch * t)
                         * np.exp(-t / (decay * decay_factor)))
    wave /= np.max(np.abs(wave))
    click = min(n, round(0.01 * sample_rate))
    wave[:click] += _CLICK * rng.standard_normal(click) * np.exp(-t[:click] / 0.001)
    return wave


def _render_source(source: dict[str, Any], scene: dict[str, Any]) -> np.ndarray:
    """One source's waveform before the mix is normalised. # [S]"""
    sr, n, fps = scene["sample_rate"], scene["num_samples"], scene["fps"]
    t = np.arange(n) / sr
    out = np.zeros(n)
    kind = source["type"]
    if source["screen"] == "on_screen":
        keys = source.get("impact_keys", range(len(source["impact_frames"])))  # edit_impact keeps each one's noise
        for key, frame, amplitude in zip(keys, source["impact_frames"], source["amplitudes"]):
            start = round(frame * sr / fps)
            rng = np.random.default_rng([source["noise_seed"], key])
            out[start:] += source["gain"] * amplitude * _impact_sound(source, n - start, sr, rng)
    elif kind == "hum":
        for k, phase in enumerate(source["phases"][: source["harmonics"]], start=1):
            out += source["level"] / k * np.sin(2 * np.pi * k * source["frequency"] * t + phase)
    elif kind == "rain":
        freqs = np.maximum(np.fft.rfftfreq(n, 1 / sr), 1.0)
        noise = np.fft.irfft(np.fft.rfft(np.random.default_rng(source["noise_seed"]).standard_normal(n))
                             * rain_spectrum(freqs), n)
        out = source["level"] * noise / np.sqrt(np.mean(noise**2))
    else:
        ramp = round(0.01 * sr)  # raised-cosine edges: a tone, not a click
        length = round(source["length"] * sr)
        envelope = np.ones(length)
        envelope[:ramp] = envelope[-ramp:][::-1] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        tone = source["level"] * np.sin(2 * np.pi * source["frequency"] * t)
        for onset in source["onsets"]:
            start = round(onset * sr)
            stop = min(n, start + length)
            out[start:stop] += tone[start:stop] * envelope[: stop - start]
    return out


def _mix(scene: dict[str, Any]) -> np.ndarray:
    """The sum of every source before any gain. # [S]"""
    return sum(_render_source(source, scene) for source in scene["sources"])


def mix_gain(scene: dict[str, Any]) -> float:
    """The gain :func:`render_audio` gives a scene's mix: its ``mix_scale``, or the peak normalisation's."""
    if "mix_scale" in scene:
        return float(scene["mix_scale"])
    return scene["peak"] / float(np.max(np.abs(_mix(scene))))


def render_audio(scene: dict[str, Any]) -> np.ndarray:
    """Renders the mono mix of every source in ``scene``, peak-normalised to ``scene["peak"]``.

    Rendering reads only the scene, so a scene with a source removed or its type changed renders the
    corresponding counterfactual audio. A scene with ``mix_scale`` (set by :func:`edit_impact`) is scaled by it
    instead of peak-normalised, and clipped to [−1, 1], so its sources sound exactly as loud as in the scene it
    was edited from.

    Returns:
        float32 waveform. # [S]
    """
    mix = _mix(scene)
    if "mix_scale" in scene:
        return np.clip(mix * scene["mix_scale"], -1.0, 1.0).astype(np.float32)
    return (mix * (scene["peak"] / np.max(np.abs(mix)))).astype(np.float32)


EDITS: tuple[str, ...] = ("remove", "add")
"""Kinds of :func:`edit_impact`."""


def edit_impact(scene: dict[str, Any], kind: str, rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    """A counterfactual of ``scene`` whose sound has one on-screen impact removed or one added, and that impact's time.

    The frames stay what they were (nothing but the impact lists changes), so :func:`render_audio` of the result is
    a soundtrack that matches its video everywhere but at one moment: what a generator that misses or invents one
    impact produces. ``"remove"`` drops an impact drawn uniformly among all on-screen impacts; ``"add"`` gives a
    drawn on-screen object one more impact (amplitude drawn within the range of its own impacts') on a frame drawn
    among those at least :data:`MIN_GAP` from every impact and :data:`EDGE` from both ends of the clip, where the
    video shows no contact. Every other impact keeps its own noise (``impact_keys``) and the mix keeps the
    original's gain (``mix_scale``), so the edited audio is the original minus the removed impact's sound, or plus
    the added one's.

    Args:
        scene: a ground-truth scene (:func:`sample_scene`); not modified. Give it its ``mix_scale``
            (:func:`mix_gain`) to edit it several times without rendering the original mix each time.
        kind: ``"remove"`` or ``"add"``.
        rng: the draws.

    Returns:
        The edited scene and the time (s) of the removed or added impact.

    Raises:
        ValueError: an unknown kind, no on-screen impact to remove, or no free frame to add one on.
    """
    if kind not in EDITS:
        raise ValueError(f"kind must be one of {EDITS}, got {kind!r}")
    edited = json.loads(json.dumps(scene))  # a deep copy of the JSON-ready dict
    edited["mix_scale"] = mix_gain(scene)
    objects = [s for s in edited["sources"] if s["screen"] == "on_screen"]
    for s in objects:
        s.setdefault("impact_keys", list(range(len(s["impact_frames"]))))
    fps = edited["fps"]
    impacts = [(s, i) for s in objects for i in range(len(s["impact_frames"]))]
    if kind == "remove":
        if not impacts:
            raise ValueError(f"scene {scene.get('id')!r} has no on-screen impact to remove")
        source, i = impacts[int(rng.integers(len(impacts)))]
        frame = source["impact_frames"][i]
        for key in ("impact_frames", "impact_times", "amplitudes", "impact_keys"):
            del source[key][i]
        return edited, frame / fps
    gap, edge = math.ceil(MIN_GAP * fps - 1e-9), math.ceil(EDGE * fps - 1e-9)
    taken = np.array([s["impact_frames"][i] for s, i in impacts] or [-10**6])
    free = [f for f in range(edge, edited["num_frames"] - edge) if np.abs(taken - f).min() >= gap]
    if not objects or not free:
        raise ValueError(f"scene {scene.get('id')!r} has no on-screen object or no free frame for an added impact")
    source = objects[int(rng.integers(len(objects)))]
    frame = free[int(rng.integers(len(free)))]
    at = int(np.searchsorted(source["impact_frames"], frame))
    source["impact_frames"].insert(at, frame)
    source["impact_times"].insert(at, frame / fps)
    low, high = (min(source["amplitudes"]), max(source["amplitudes"])) if source["amplitudes"] else (0.6, 1.0)
    source["amplitudes"].insert(at, float(rng.uniform(low, high)))
    source["impact_keys"].insert(at, max(source["impact_keys"], default=-1) + 1)  # noise of its own
    return edited, frame / fps


# --------------------------------------------------------------------------- video


def _background(scene: dict[str, Any]) -> np.ndarray:
    """The static room: wall gradient, ceiling beam, floor, right wall and the bell's post. # [H, W, 3]"""
    size, layout = scene["size"], scene["layout"]
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    img = (1 - ramp) * np.array(_BG["wall_top"]) + ramp * np.array(_BG["wall_bottom"])
    img = np.broadcast_to(img, (size, size, 3)).copy()
    img[:, layout["wall_x"]:] = _BG["side_wall"]
    img[: layout["ceiling_y"]] = _BG["ceiling"]
    img[layout["floor_y"]:] = _BG["floor"]
    for source in scene["sources"]:
        if source["type"] == "bell" and source["screen"] == "on_screen":
            g = source["geometry"]
            bottom = math.ceil(layout["ceiling_y"] + g["rod"] + g["body"]) + 1
            width = max(2, round(0.03 * size))
            img[layout["ceiling_y"]:bottom, g["post_x"]:g["post_x"] + width] = _BG["post"]
    return np.round(img).astype(np.uint8)


def _object_mask(source: dict[str, Any], d: float, layout: dict[str, int], xx: np.ndarray,
                 yy: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies inside the object at displacement ``d``. # [H, W]"""
    g = source["geometry"]
    if source["type"] == "ball":
        cy = layout["floor_y"] - g["radius"] - d
        return (xx - g["x"]) ** 2 + (yy - cy) ** 2 <= g["radius"] ** 2
    if source["type"] == "block":
        left = layout["wall_x"] - g["side"] - d
        return (xx >= left) & (xx < left + g["side"]) & (yy >= layout["floor_y"] - g["side"]) & (yy < layout["floor_y"])
    # The bell: rotate pixel centres into its frame (u across, v down the rod from the pivot).
    phi = math.radians(d)
    dx, dy = xx - layout["pivot_x"], yy - layout["ceiling_y"]
    u = dx * math.cos(phi) + dy * math.sin(phi)
    v = -dx * math.sin(phi) + dy * math.cos(phi)
    rod, body, half = g["rod"], g["body"], g["half_width"]
    # A flared profile with a 1-px-high rim at full width: at contact (angle 0) the rim's outer column
    # lies exactly left of the post.
    depth = np.clip((v - rod) / (body - 1.0), 0.0, 1.0)
    width = 0.3 * half + 0.7 * half * depth**1.5
    in_body = (v >= rod) & (v <= rod + body) & (np.abs(u) <= width)
    rod_half_width = max(0.6, 0.012 * xx.shape[1])  # at least one pixel column wide at any frame size
    in_rod = (v >= 0) & (v < rod) & (np.abs(u) <= rod_half_width)
    return in_body | in_rod


def render_frames(scene: dict[str, Any]) -> np.ndarray:
    """Renders the video frames of ``scene``; frame ``k`` shows the scene at time ``k / fps``.

    Returns:
        uint8 RGB frames. # [T, H, W, 3]
    """
    size, layout, num_frames = scene["size"], scene["layout"], scene["num_frames"]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    frames = np.repeat(_background(scene)[None], num_frames, axis=0)  # [T, H, W, 3]
    for source in scene["sources"]:
        if source["screen"] != "on_screen":
            continue
        displacement = _displacement(source, np.arange(num_frames, dtype=np.float64))  # [T]
        for frame, d in zip(frames, displacement):
            frame[_object_mask(source, float(d), layout, xx, yy)] = source["colour"]
    return frames


# --------------------------------------------------------------------------- corpus


def synthesize_corpus(out_dir: str | Path, num_clips: int, seed: int, duration: float = 4.0, preset: str = "tiny",
                      size: int = 96, fps: int = 25, progress: bool = True) -> Path:
    """Renders ``num_clips`` clips into ``out_dir`` (layout and formats in the module docstring).

    The manifest is written last, so a folder with a manifest holds every clip it lists.

    Args:
        out_dir: output folder (created if missing).
        num_clips: number of clips (at least 1).
        seed: corpus seed; clip ``i`` depends only on ``(seed, i)``.
        duration: clip length in seconds.
        preset: ``AudioConfig`` preset that sets the sample rate.
        size: frame height and width in pixels.
        fps: video frame rate.
        progress: print one line per clip.

    Returns:
        Path of ``manifest.jsonl``.

    Raises:
        ValueError: on a bad argument.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips}")
    sample_scene(seed, 0, duration, preset, size, fps)  # validates every argument before anything is written
    out = Path(out_dir)
    (out / GT_FOLDER).mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(num_clips):
        scene = sample_scene(seed, index, duration, preset, size, fps)
        clip_id = scene["id"]
        row = {"id": clip_id, "video": f"videos/{clip_id}.mp4", "audio": f"audio/{clip_id}.wav", "duration": duration,
               "caption": make_caption(scene), "label": make_label(scene),
               "ground_truth": f"{GT_FOLDER}/{clip_id}.json"}
        wav = render_audio(scene)  # [S]
        write_video(out / row["video"], render_frames(scene), fps, audio=wav, sample_rate=scene["sample_rate"])
        write_audio(out / row["audio"], wav, scene["sample_rate"])
        (out / row["ground_truth"]).write_text(json.dumps(scene) + "\n", encoding="utf-8")
        rows.append(row)
        if progress:
            print(f"synth {index + 1}/{num_clips} {clip_id}: {row['label']}", flush=True)
    # The arguments that made the corpus, so it can be rebuilt or extended bit for bit.
    (out / "corpus.json").write_text(json.dumps(dict(num_clips=num_clips, seed=seed, duration=duration, preset=preset,
                                                     size=size, fps=fps), indent=2) + "\n", encoding="utf-8")
    manifest = out / "manifest.jsonl"
    partial = manifest.with_name(manifest.name + ".partial")
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    partial.replace(manifest)
    return manifest


class SyntheticDataModule(ClipDataModule):
    """The synthetic corpus as a data module; renders it on first use (``prepare_data``).

    Training reads ``root``; validation and test read ``val_root`` (a held-out corpus rendered
    with ``seed + 10_000``, so no clip is shared).

    Args:
        root: training corpus folder (``manifest.jsonl`` inside).
        val_root: held-out corpus folder (default ``<root>_heldout``).
        num_clips: training clips to render when ``root`` has no manifest.
        val_clips: held-out clips to render when ``val_root`` has no manifest.
        seed: corpus seed.
        size: frame side in pixels.
        **kwargs: :class:`~reasonaudio.data_modules.clips.ClipDataModule` arguments (``duration`` also sets the render
            length).
    """

    corpus = "synthetic"

    def __init__(self, root: str = "runs/synth", val_root: str | None = None, num_clips: int = 64, val_clips: int = 8,
                 seed: int = 0, size: int = 96, **kwargs):
        kwargs.setdefault("audio_preset", "tiny")
        kwargs.setdefault("duration", 4.0)
        super().__init__(**kwargs)
        self.roots = {"train": Path(root), "val": Path(val_root or f"{str(root).rstrip('/')}_heldout")}
        self.counts = {"train": num_clips, "val": val_clips}
        self.seeds = {"train": seed, "val": seed + 10_000}
        self.size = size
        self.render_duration = kwargs["duration"]
        self.render_preset = kwargs["audio_preset"]

    def _needed(self) -> set[str]:
        """Corpora the current trainer stage reads (both when used without a trainer)."""
        fn = self.trainer.state.fn if self.trainer is not None else None
        if fn == "predict":
            return {"train" if self.predict_split == "train" else "val"}
        return {"val"} if fn in ("validate", "test") else {"train", "val"}

    def prepare_data(self) -> None:
        for split, root in self.roots.items():
            if split in self._needed() and not (root / "manifest.jsonl").exists():
                synthesize_corpus(root, num_clips=self.counts[split], seed=self.seeds[split],
                                  duration=self.render_duration, preset=self.render_preset, size=self.size)

    def records(self, split: str) -> list[ClipRecord] | None:
        root = self.roots["train" if split == "train" else "val"]
        manifest = root / "manifest.jsonl"
        if not manifest.exists():
            raise ValueError(f"{manifest} not found: call prepare_data() or run `reasonaudio-data synth --out {root}`")
        made = json.loads((root / "corpus.json").read_text()) if (root / "corpus.json").exists() else {}
        wanted = {"preset": self.render_preset, "duration": self.render_duration, "size": self.size}
        clash = {k: (made[k], v) for k, v in wanted.items() if k in made and made[k] != v}
        if clash:  # e.g. a 16 kHz corpus read by a 44.1 kHz stage would train on band-limited audio
            raise ValueError(f"{root} was rendered with other settings (made, requested): {clash}; "
                             "use another root or delete it")
        return rows_to_records(read_think_jsonl(manifest, corpus=self.corpus), root, has_video=True,
                               corpus=self.corpus)
