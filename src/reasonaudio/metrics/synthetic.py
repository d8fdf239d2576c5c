"""Exact metrics for audio generated for the synthetic corpus (:mod:`reasonaudio.data_modules.synthetic`).

The scoring functions take a mono waveform (``[S]`` or ``[1, S]``, numpy or torch), its sample rate
and the clip's ground-truth dict (``gt/<id>.json``). They are pure and deterministic, work in seconds
and hertz (any sample rate), use numpy only, and cut the audio to the clip's duration first, so
padding to whole latents or a codec's tail is never scored.

Onsets. :func:`onset_strength` is a log-spectral flux: a 32 ms Hann STFT every 2 ms, the power of
each bin compressed as ``log(P + 3 · median_t(P) + 1e-3 · max_t(P))`` and its increase over 16 ms
summed over bins, counting only the part of each increase above 1 nat. Adding the bin's median
makes stationary sound (the hum, the rain) a floor that an impact must rise above instead of a source
of random log fluctuations; adding a fraction of the bin's maximum ignores detail 30 dB below the
loudest moment of that bin (the beating of decaying tails). Frequencies below 150 Hz (the hum's
fundamentals) and any ``exclude_bands`` are removed first. :func:`detect_onsets` keeps the flux
peaks that are the largest within ±30 ms and above ``ONSET_THRESHOLD``, timed at the STFT frame
centre, except within half a window of either end, where reflect padding mirrors the signal and
would invent onsets. On the ground-truth audio of 200 random 4 s clips, true impacts reach a flux of
at least 28 and everything else at most 6.2; the threshold of 13 sits between them in ratio.

Off-screen beeps are periodic onsets by design and never an on-screen impact, so
:func:`onset_sync_error` and :func:`onset_f1` remove ±18 % around each ground-truth beep frequency
before detection (the band is known exactly from the ground truth, and impacts keep most of their
energy outside it). Hum and rain are stationary and need no exclusion. With no onset at all the sync
error is the clip duration, a finite penalty larger than any real error.

Timbre. At each ground-truth impact, :func:`classify_impacts` takes the power spectrum of the 100 ms
after it minus that of the 100 ms before it (the same decaying half-Hann window for both, negative
bins set to 0), so that stationary sources and the tails of earlier sounds cancel and only what the
impact added remains. That spectrum and three templates (``TIMBRES`` of ball, block and bell at the
object's ground-truth pitch and brightness) are pooled into Gaussian bands 1/12 octave wide, spaced
1/24 octave from half the pitch to 5.7 times it, and the impact takes the type of the template with
the highest cosine similarity of band amplitudes (``"none"`` if it added less than 0.1 % of the
power after it). Templates ignore decay: within 100 ms the partial positions and the noise band tell
the three types apart, and decay would need per-type assumptions about the wrong types.
:func:`timbre_agreement` is the mean over on-screen objects of the fraction of their impacts that
take their own type; as it listens at the true impact times, audio out of sync scores lower too.

Off-screen presence. :func:`offscreen_scores` measures each off-screen source of the ground truth by
its own signature, in dB, and :func:`offscreen_presence` compares it with ``PRESENCE_DB``:

- hum: median spectrum over 250 ms frames (4 Hz resolution); median over harmonics 1–4 of the power
  within ±4 Hz of the harmonic over the power 12–24 Hz away from it;
- beeps: median over the ground-truth beeps (those with room around them in the clip) of the power
  at exactly the beep frequency in excess of the power 3–5 bins away, during the beep, over the
  larger of that excess in equally long spans 40 ms before and after it and the broadband level
  during it (no complete beep: -300 dB);
- rain: the stationary broadband floor (20th percentile over time of each bin, median over the
  bins from 1.5 to 6 kHz) over the mean power of the whole clip.

On 150 clips with all three sources, of 2 s and of 4 s, present sources score at least 14.8 dB
(hum), 13.1 dB (beeps) and -31 dB (rain); the same clips rendered without the source score at most
3.7, 3.9 and -103 dB. The rain threshold (-45 dB) is an absolute floor: a generator whose own noise
floor is that loud reads as rain.

As ``torchmetrics`` metrics. :class:`OnsetError`, :class:`OnsetF1`, :class:`OffscreenPresence` and
:class:`TimbreAgreement` each hold the per-clip score of one function above (``clip_score``, the one definition
of that score) and two states, its sum and the number of scored clips, reduced by summation, so they are correct
under DDP and merge exactly; ``compute`` is the mean per-clip score (NaN with no scored clip).
``update(audio, sample_rate, ground_truth)`` takes waveforms ``[B, S]`` (or a list of ``[S]``) and one
ground-truth dict or ``gt/<id>.json`` path per clip. Clips without off-screen sources are not counted by
:class:`OffscreenPresence`. :func:`clip_scores` / :func:`score_synthetic` give the same four scores per clip /
as means for a batch of waveforms, from the same ``clip_score`` methods. :class:`GroundTruthOnsetReward` is
an oracle reward made of the onset scores, for ablations of post-training.
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reasonaudio.metrics.means import ItemMean
from reasonaudio.models.reward import Reward
from reasonaudio.synthetic_world import (TIMBRES, GroundTruth, ground_truth_files, impact_times, read_ground_truth,
                                         spectral_tilt)

ONSET_THRESHOLD = 13.0
"""Spectral-flux peak (nats summed over bins) above which an onset is detected."""
BEEP_EXCLUSION = 1.18
"""Onset scoring removes frequencies within this ratio of each ground-truth beep frequency."""
PRESENCE_DB = {"hum": 10.0, "beeps": 8.0, "rain": -45.0}
"""Decision thresholds of :func:`offscreen_presence`, in dB (module docstring)."""

_MIN_ONSET_HZ = 150.0
_ONSET_WINDOW, _ONSET_HOP, _ONSET_LAG = 0.032, 0.002, 8  # STFT window (s), hop (s), flux lag (hops: 16 ms)
_ONSET_SEPARATION = 0.03  # s; an onset is the largest flux within this distance
_TIMBRE_WINDOW = 0.1  # s analysed after (and before) each impact
_SILENT_IMPACT = 1e-3  # an impact adding less than this fraction of the power after it added nothing
_BAND_WIDTH = np.log(2) / 12  # Gaussian pooling band, standard deviation in log frequency
_BAND_STEPS = np.arange(-24, 61) / 24  # band centres, octaves relative to the pitch


def _mono(wav: torch.Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """Validates the inputs and returns a float64 ``[S]`` array."""
    x = wav.detach().cpu().double().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"waveform must be mono [S] or [1, S], got shape {tuple(x.shape)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if x.size < sample_rate // 10:
        raise ValueError(f"waveform must be at least 0.1 s long, got {x.size} samples at {sample_rate} Hz")
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform contains NaN or infinite samples")
    return x


def _stft_power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Power spectrogram with a Hann window, frames centred on ``i · hop`` (reflect padding). # [F, K]"""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    starts = hop * np.arange(1 + (padded.size - n_fft) // hop)
    window = np.hanning(n_fft + 1)[:-1]
    return np.abs(np.fft.rfft(padded[starts[:, None] + np.arange(n_fft)] * window, axis=1)) ** 2


def _kept(freqs: np.ndarray, exclude_bands: Sequence[tuple[float, float]]) -> np.ndarray:
    """Frequencies that onset detection looks at. # [K] bool"""
    keep = freqs >= _MIN_ONSET_HZ
    for low, high in exclude_bands:
        keep &= (freqs < low) | (freqs > high)
    return keep


def onset_strength(wav: torch.Tensor | np.ndarray, sample_rate: int,
                   exclude_bands: Sequence[tuple[float, float]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The stationarity-compensated log-spectral flux that :func:`detect_onsets` peak-picks (module docstring).

    Args:
        wav: mono waveform, ``[S]`` or ``[1, S]``.
        sample_rate: its sample rate in Hz.
        exclude_bands: ``(low, high)`` frequency ranges in Hz to ignore.

    Returns:
        Frame times in seconds and the flux at each. # [F], [F]

    Raises:
        ValueError: on a bad waveform, sample rate or band.
    """
    x = _mono(wav, sample_rate)
    for band in exclude_bands:
        if len(band) != 2 or not 0 <= band[0] < band[1]:
            raise ValueError(f"exclude_bands entries must be (low, high) with 0 <= low < high, got {band}")
    # Remove the ignored frequencies from the signal itself, so no STFT leakage carries them back.
    x = np.fft.irfft(np.fft.rfft(x) * _kept(np.fft.rfftfreq(x.size, 1 / sample_rate), exclude_bands), x.size)
    n_fft, hop = round(_ONSET_WINDOW * sample_rate), round(_ONSET_HOP * sample_rate)
    power = _stft_power(x, n_fft, hop)[:, _kept(np.fft.rfftfreq(n_fft, 1 / sample_rate), exclude_bands)]
    level = np.log(power + 3.0 * np.median(power, axis=0) + 1e-3 * power.max(axis=0) + 1e-30)  # [F, K]
    flux = np.zeros(level.shape[0])
    flux[_ONSET_LAG:] = np.maximum(level[_ONSET_LAG:] - level[:-_ONSET_LAG] - 1.0, 0.0).sum(axis=1)
    return np.arange(flux.size) * hop / sample_rate, flux


def detect_onsets(wav: torch.Tensor | np.ndarray, sample_rate: int,
                  exclude_bands: Sequence[tuple[float, float]] = ()) -> np.ndarray:
    """Detects onsets as peaks of :func:`onset_strength` (module docstring).

    Args:
        wav: mono waveform, ``[S]`` or ``[1, S]``.
        sample_rate: its sample rate in Hz.
        exclude_bands: ``(low, high)`` frequency ranges in Hz to ignore.

    Returns:
        Onset times in seconds, ascending. # [N]

    Raises:
        ValueError: on a bad waveform, sample rate or band.
    """
    times, flux = onset_strength(wav, sample_rate, exclude_bands)
    hop = _ONSET_HOP
    reach = round(_ONSET_SEPARATION / hop)
    local_max = np.lib.stride_tricks.sliding_window_view(np.pad(flux, reach, mode="edge"), 2 * reach + 1).max(axis=1)
    is_peak = (flux == local_max) & (flux > ONSET_THRESHOLD)
    # Reflect padding mirrors the signal at both ends; frames that reach into it are not trusted.
    edge = _ONSET_WINDOW / 2
    return times[is_peak & (times >= edge + _ONSET_LAG * hop) & (times < times[-1] - edge)]


def _clip(wav: torch.Tensor | np.ndarray, sample_rate: int, gt: dict[str, Any]) -> np.ndarray:
    """The waveform cut to the clip's duration: padding after it (to whole latents, by a codec) is not
    part of the clip and would end in an artificial edge. # [S]"""
    return _mono(wav, sample_rate)[: round(gt["duration"] * sample_rate)]


def beep_bands(gt: dict[str, Any]) -> list[tuple[float, float]]:
    """The ``(low, high)`` Hz bands that the onset scores ignore: ±18 % around each beep's frequency."""
    return [(s["frequency"] / BEEP_EXCLUSION, s["frequency"] * BEEP_EXCLUSION)
            for s in gt["sources"] if s["type"] == "beeps"]


def _scored_onsets(wav: torch.Tensor | np.ndarray, sample_rate: int, gt: dict[str, Any]) -> np.ndarray:
    """Onsets with the ground truth's beep bands excluded (module docstring). # [N]"""
    return detect_onsets(_clip(wav, sample_rate, gt), sample_rate, beep_bands(gt))


def onset_sync_error(wav: torch.Tensor | np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float:
    """Mean distance in seconds from each true impact to its nearest detected onset.

    When nothing is detected the error is the clip duration (``gt["duration"]``), a finite penalty
    larger than any real error.

    Raises:
        ValueError: on a bad waveform or a ground truth without impacts.
    """
    return onset_error_of_times(impact_times(gt), _scored_onsets(wav, sample_rate, gt), gt["duration"])


def onset_error_of_times(truth: np.ndarray, onsets: np.ndarray, duration: float) -> float:
    """:func:`onset_sync_error` of given onset times: mean distance from each true impact ``[N]`` to the
    nearest onset ``[M]`` (seconds), or ``duration`` when there is no onset."""
    if onsets.size == 0:
        return float(duration)
    return float(np.mean(np.min(np.abs(truth[:, None] - onsets[None, :]), axis=1)))


def onset_f1(wav: torch.Tensor | np.ndarray, sample_rate: int, gt: dict[str, Any], tolerance: float = 0.05) -> float:
    """F1 of detected onsets against the true impacts, matched one-to-one within ``±tolerance`` s.

    Impacts are visited in time order and each takes the earliest unmatched onset in its window;
    with windows of equal width this greedy matching is a maximum matching.

    Raises:
        ValueError: on a bad waveform, a ground truth without impacts or a non-positive tolerance.
    """
    return onset_f1_of_times(impact_times(gt), _scored_onsets(wav, sample_rate, gt), tolerance)


def onset_f1_of_times(truth: np.ndarray, onsets: np.ndarray, tolerance: float = 0.05) -> float:
    """:func:`onset_f1` of given ascending onset times ``[M]`` against ascending true impacts ``[N]``."""
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    matched, next_free = 0, 0
    for t in truth:
        while next_free < onsets.size and onsets[next_free] < t - tolerance:
            next_free += 1
        if next_free < onsets.size and onsets[next_free] <= t + tolerance:
            matched, next_free = matched + 1, next_free + 1
    return 2.0 * matched / (truth.size + onsets.size)


def chance_onset_scores(gt: dict[str, Any], draws: int = 1000, seed: int = 0,
                        tolerance: float = 0.05) -> tuple[float, float]:
    """Onset error (s) and F1 of random onsets at the clip's true rate: the chance baseline.

    Each draw places as many onsets as the clip has on-screen impacts uniformly over its duration
    and scores them with :func:`onset_error_of_times` and :func:`onset_f1_of_times`; the result is
    the mean over ``draws`` (a fixed ``seed`` makes it reproducible). A model that has learned only
    how often impacts happen, not when, scores about this.

    Returns:
        ``(onset_error, onset_f1)`` averaged over the draws.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    truth = impact_times(gt)
    rng = np.random.default_rng(seed)
    errors, f1s = np.empty(draws), np.empty(draws)
    for i in range(draws):
        onsets = np.sort(rng.uniform(0.0, gt["duration"], truth.size))
        errors[i] = onset_error_of_times(truth, onsets, gt["duration"])
        f1s[i] = onset_f1_of_times(truth, onsets, tolerance)
    return float(errors.mean()), float(f1s.mean())


def _band_centres(pitch: float, sample_rate: int) -> np.ndarray:
    """Pooling band centres in Hz below 0.45 · sample rate. # [J]"""
    centres = pitch * 2.0**_BAND_STEPS
    return centres[centres < 0.45 * sample_rate]


def _pool(freqs: np.ndarray, power: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Power pooled into Gaussian log-frequency bands. # [J]"""
    log_f = np.log(np.maximum(freqs, 1.0))
    weights = np.exp(-0.5 * ((log_f[None, :] - np.log(centres)[:, None]) / _BAND_WIDTH) ** 2)  # [J, K]
    return weights @ power


def _template(kind: str, pitch: float, brightness: float, freqs: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Pooled band power of an ideal impact of ``kind`` at ``pitch``. # [J]"""
    timbre = TIMBRES[kind]
    if timbre.noise_width > 0:
        ratio = np.maximum(freqs, 1.0) / pitch
        band = np.exp(-0.5 * (np.log(ratio) / timbre.noise_width) ** 2) * spectral_tilt(ratio, brightness)
        return _pool(freqs, band**2, centres)
    bands = np.zeros(centres.size)
    for ratio, amplitude, _ in timbre.partials:
        weight = (amplitude * spectral_tilt(ratio, brightness)) ** 2
        bands += weight * np.exp(-0.5 * ((np.log(ratio * pitch) - np.log(centres)) / _BAND_WIDTH) ** 2)
    return bands


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity; 0 when either vector is zero."""
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


def classify_impacts(wav: torch.Tensor | np.ndarray, sample_rate: int, gt: dict[str, Any]) -> dict[str, list[str]]:
    """Classifies the sound at each on-screen impact as ``ball``, ``block`` or ``bell`` (module docstring).

    The sound is taken at the ground-truth impact times, so audio out of sync scores lower too.

    Returns:
        For each on-screen source name, one type per impact; ``"none"`` where the impact added less
        than 0.1 % of the power after it (nothing new happened) or the audio ends before it.
    """
    x = _clip(wav, sample_rate, gt)
    n = round(_TIMBRE_WINDOW * sample_rate)
    window = np.cos(0.5 * np.pi * np.arange(n) / n) ** 2  # decaying half-Hann: full weight at the impact
    n_fft = 1 << int(np.ceil(np.log2(4 * n)))
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    result: dict[str, list[str]] = {}
    for source in gt["sources"]:
        if source["screen"] != "on_screen":
            continue
        centres = _band_centres(source["pitch"], sample_rate)
        templates = {kind: np.sqrt(_template(kind, source["pitch"], source["brightness"], freqs, centres))
                     for kind in TIMBRES}
        labels = []
        for t in source["impact_times"]:
            start = round(t * sample_rate)
            if start < n or start + n > x.size:
                labels.append("none")
                continue
            after = np.abs(np.fft.rfft(x[start:start + n] * window, n_fft)) ** 2
            before = np.abs(np.fft.rfft(x[start - n:start] * window, n_fft)) ** 2
            added = _pool(freqs, np.maximum(after - before, 0.0), centres)
            if added.sum() <= _SILENT_IMPACT * _pool(freqs, after, centres).sum():
                labels.append("none")
                continue
            scores = {kind: _cosine(np.sqrt(added), template) for kind, template in templates.items()}
            labels.append(max(scores, key=scores.get))
        result[source["name"]] = labels
    return result


def timbre_agreement(wav: torch.Tensor | np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float:
    """Mean over on-screen objects of the fraction of their impacts classified as their own type.

    Returns:
        A value in [0, 1]; 1 when every impact sounds like its object's type.

    Raises:
        ValueError: on a bad waveform or a ground truth without on-screen objects.
    """
    labels = classify_impacts(wav, sample_rate, gt)
    if not labels:
        raise ValueError(f"ground truth {gt.get('id')!r} has no on-screen object")
    types = {s["name"]: s["type"] for s in gt["sources"]}
    return float(np.mean([np.mean([label == types[name] for label in found]) for name, found in labels.items()]))


def offscreen_scores(wav: torch.Tensor | np.ndarray, sample_rate: int, gt: dict[str, Any]) -> dict[str, float]:
    """The signature level in dB of each off-screen source of ``gt`` (module docstring), by source name."""
    x = _clip(wav, sample_rate, gt)
    scores: dict[str, float] = {}
    for source in gt["sources"]:
        if source["screen"] != "off_screen":
            continue
        if source["type"] == "hum":
            scores[source["name"]] = _hum_score(x, sample_rate, source["frequency"])
        elif source["type"] == "beeps":
            scores[source["name"]] = _beep_score(x, sample_rate, source)
        else:
            scores[source["name"]] = _rain_score(x, sample_rate)
    return scores


def offscreen_presence(wav: torch.Tensor | np.ndarray, sample_rate: int, gt: dict[str, Any]) -> dict[str, bool]:
    """Whether each off-screen source of ``gt`` is audible: its score reaches ``PRESENCE_DB[type]``.

    Returns:
        ``{source name: present}`` for every off-screen source of the ground truth (empty if none).
    """
    types = {s["name"]: s["type"] for s in gt["sources"]}
    return {name: score >= PRESENCE_DB[types[name]] for name, score in offscreen_scores(wav, sample_rate, gt).items()}


def _db(ratio: float) -> float:
    return float(10 * np.log10(max(ratio, 1e-30)))


def _hum_score(x: np.ndarray, sample_rate: int, frequency: float) -> float:
    """Median over harmonics 1–4 of the power within ±4 Hz of the harmonic over the power 12–24 Hz away
    from it, dB, in the median spectrum over 250 ms frames. The median over frames ignores impacts, which
    are short; the median over harmonics ignores one harmonic that coincides with an object's pitch."""
    n_fft = round(0.25 * sample_rate)  # 4 Hz resolution separates even a 50 Hz hum's harmonics
    if x.size < n_fft:
        raise ValueError(f"hum presence needs at least 0.25 s of audio, got {x.size / sample_rate:.3f} s")
    spectrum = np.median(_stft_power(x, n_fft, n_fft // 4), axis=0)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    ratios = []
    for k in range(1, 5):
        distance = np.abs(freqs - k * frequency)
        neighbours = spectrum[(distance >= 12) & (distance <= 24)].mean()
        ratios.append(_db(spectrum[distance <= 4].mean() / max(neighbours, 1e-30)))
    return float(np.median(ratios))


def _tone_excess(x: np.ndarray, sample_rate: int, frequency: float, start: float, stop: float) -> tuple[float, float]:
    """Hann-windowed power over ``[start, stop)`` s at exactly ``frequency`` in excess of the mean power
    3–5 bins (1/span Hz) away, and that mean: a tone has a large excess, broadband sound none."""
    first, last = round(start * sample_rate), round(stop * sample_rate)
    t = np.arange(first, last) / sample_rate
    segment = np.hanning(last - first) * x[first:last]
    steps = np.array([0.0, -5, -4, -3, 3, 4, 5]) / (stop - start)  # the Hann main lobe ends 2 bins away
    powers = np.abs(np.exp(-2j * np.pi * (frequency + steps)[:, None] * t[None, :]) @ segment) ** 2
    return max(powers[0] - powers[1:].mean(), 0.0), float(powers[1:].mean())


def _beep_score(x: np.ndarray, sample_rate: int, source: dict[str, Any]) -> float:
    """Median over beeps of the tonal excess at the beep frequency during the beep over the larger of the
    excess in equally long spans 40 ms before and after it and the broadband level during it, dB.

    Tonal excess ignores broadband sound (impact clicks, knocks, rain) that happens to fall in a beep;
    comparing with the surroundings ignores a decaying partial at the beep frequency; the median over
    beeps ignores the rest of the coincidences.
    """
    frequency, length, duration = source["frequency"], source["length"], x.size / sample_rate
    span = length - 0.02  # the beep without its 10 ms ramps
    contrasts = []
    for onset in source["onsets"]:
        start, stop = onset + 0.01, onset + length - 0.01
        if start - 0.04 - span < 0 or stop + 0.04 + span > duration:
            continue
        inside, broadband = _tone_excess(x, sample_rate, frequency, start, stop)
        before, _ = _tone_excess(x, sample_rate, frequency, start - 0.04 - span, start - 0.04)
        after, _ = _tone_excess(x, sample_rate, frequency, stop + 0.04, stop + 0.04 + span)
        contrasts.append(_db(inside / max(before, after, broadband, 1e-30)))
    return float(np.median(contrasts)) if contrasts else -300.0


def _rain_score(x: np.ndarray, sample_rate: int) -> float:
    """Stationary 1.5–6 kHz noise floor over the clip's mean power per bin, dB."""
    n_fft = round(0.032 * sample_rate)
    power = _stft_power(x, n_fft, n_fft // 2)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    band = (freqs >= 1500) & (freqs <= min(6000.0, 0.45 * sample_rate))
    floor = np.median(np.percentile(power[:, band], 20, axis=0))
    return _db(floor / max(power.mean(), 1e-30))


class SyntheticScore(ItemMean):
    """Mean of a per-clip synthetic-benchmark score over every clip seen (sum and count states)."""

    @abstractmethod
    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float | None:
        """The score of one clip, or ``None`` when the clip has nothing to score."""

    def update(self, audio: torch.Tensor | Sequence[torch.Tensor], sample_rate: int,
               ground_truth: Sequence[GroundTruth]) -> None:
        """Score a batch.

        Args:
            audio: waveforms ``[B, S]`` or a list of ``[S]`` waveforms.
            sample_rate: their sample rate in Hz.
            ground_truth: one ground-truth dict (or ``gt/<id>.json`` path) per waveform.
        """
        if len(audio) != len(ground_truth):
            raise ValueError(f"{len(audio)} waveforms but {len(ground_truth)} ground truths")
        scores = [self.clip_score(wav.detach().cpu().double().numpy(), sample_rate, read_ground_truth(gt))
                  for wav, gt in zip(audio, ground_truth)]
        self.add(torch.tensor([s for s in scores if s is not None], dtype=torch.float64))


class OnsetError(SyntheticScore):
    """Mean distance in seconds from each true impact to the nearest detected onset, per clip."""

    higher_is_better = False

    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float:
        return onset_sync_error(wav, sample_rate, gt)


class OnsetF1(SyntheticScore):
    """Onset F1 against the true impacts, per clip.

    Args:
        tolerance: matching window in seconds (±).
    """

    higher_is_better = True

    def __init__(self, tolerance: float = 0.05, **kwargs: Any):
        if not tolerance > 0:
            raise ValueError(f"tolerance must be positive, got {tolerance}")
        super().__init__(**kwargs)
        self.tolerance = tolerance

    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float:
        return onset_f1(wav, sample_rate, gt, self.tolerance)


class OffscreenPresence(SyntheticScore):
    """Fraction of a clip's off-screen sources that are audible, over clips that have any."""

    higher_is_better = True

    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float | None:
        found = offscreen_presence(wav, sample_rate, gt)
        return float(np.mean(list(found.values()))) if found else None


class TimbreAgreement(SyntheticScore):
    """Mean over on-screen objects of the fraction of their impacts that sound like their type, per clip."""

    higher_is_better = True

    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float:
        return timbre_agreement(wav, sample_rate, gt)


SCORES: dict[str, type[SyntheticScore]] = {"onset_error": OnsetError, "onset_f1": OnsetF1,
                                           "offscreen_presence": OffscreenPresence,
                                           "timbre_agreement": TimbreAgreement}
"""The benchmark's scores by the key they have in summaries (onset error in seconds)."""


def clip_scores(wavs: torch.Tensor, sample_rate: int, ground_truth: Sequence[GroundTruth]) -> list[dict[str, float]]:
    """Per-clip scores (every key of :data:`SCORES`) of ``wavs [B, S]``, one ground truth per item.

    ``offscreen_presence`` is NaN for a clip without off-screen sources.
    """
    metrics = {name: cls() for name, cls in SCORES.items()}
    scores = []
    for wav, item in zip(wavs.detach().cpu().double().numpy(), ground_truth):
        gt = read_ground_truth(item)
        clip = {name: metric.clip_score(wav, sample_rate, gt) for name, metric in metrics.items()}
        scores.append({k: float("nan") if v is None else float(v) for k, v in clip.items()})
    return scores


def score_synthetic(wavs: torch.Tensor, sample_rate: int, ground_truth: Sequence[GroundTruth]) -> dict[str, float]:
    """Mean of :func:`clip_scores` over the clips (``offscreen_presence`` over clips that have off-screen
    sources, NaN when none has): the number each metric of :data:`SCORES` computes on the same clips."""
    scores = clip_scores(wavs, sample_rate, ground_truth)
    means = {}
    for name in SCORES:
        values = np.array([c[name] for c in scores])
        means[name] = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
    return means


class GroundTruthOnsetReward(Reward):
    """Ground-truth synchrony of synthetic clips: ``½ (onset F1 + exp(−onset error / τ))`` in [0, 1].

    Both terms are this module's metrics against the clip's known impact
    times: F1 punishes spurious and missing onsets, the error term rewards onsets close to impacts.
    An oracle for ablations; the comparison in docs/results.md does not train with it.

    Args:
        ground_truth: synthetic corpus folders holding ``gt/<id>.json``.
        sample_rate: rate of the waveforms it is given.
        tau: error scale in seconds.
    """

    audio_input = "wav"

    def __init__(self, ground_truth: Sequence[str], sample_rate: int = 16000, tau: float = 0.1):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.roots = [Path(p) for p in ground_truth]
        self.sample_rate, self.tau = sample_rate, tau

    def video_inputs(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        return [read_ground_truth(path) for path in ground_truth_files(self.roots, batch["id"])]

    def forward(self, audio: torch.Tensor, video: Sequence[dict[str, Any]]) -> torch.Tensor:
        values = []
        for wav, gt in zip(audio.detach().cpu().numpy(), video):
            f1 = onset_f1(wav, self.sample_rate, gt)
            err = onset_sync_error(wav, self.sample_rate, gt)
            values.append(0.5 * (f1 + float(np.exp(-err / self.tau))))
        return torch.tensor(values, dtype=torch.float32, device=audio.device)
