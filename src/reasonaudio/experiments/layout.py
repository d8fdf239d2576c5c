"""Where a demo-style run keeps its artefacts: :class:`DemoLayout`, the one place that spells out the folders of
``make demo`` (and of ``make study``, which builds the same artefacts under other step names), which the
comparison, the paper tables' toy runs and the resume check read back.

Every step of a :class:`~reasonaudio.experiments.pipeline.Pipeline` is the folder of its name under the run's
root (``vocoder/``, ``latent_stats/``, ``features_heldout/``, ...); a ``fit`` step logs its Lightning run as
``<step>/<name>/version_0`` (:func:`fit_checkpoint`). Inside a synthetic corpus (``corpus/``, ``heldout/``:
:func:`reasonaudio.data_modules.synthetic.synthesize_corpus`) every clip has ``videos/<id>.mp4``
(:func:`corpus_video`) and its ground truth (:func:`reasonaudio.synthetic_world.ground_truth_file`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reasonaudio.data_modules.features import prefix_store_dir
from reasonaudio.systems.policy_weights import MERGED
from reasonaudio.systems.sync import EXPORT_FILE as SYNC_EXPORT

STEPS = "steps.json"
"""A :class:`~reasonaudio.experiments.pipeline.Pipeline`'s record of its finished steps, in its run folder."""
REWARD_EXPORT = "reward.safetensors"
"""The alignment classifier's export inside ``<export>/`` (:class:`~reasonaudio.systems.reward.RewardTrain`)."""
SYNC_METRICS = "metrics.json"
"""The held-out offset accuracy a Synchformer export keeps beside its weights (:mod:`reasonaudio.systems.sync`)."""


def fit_checkpoint(step: Path, name: str) -> Path:
    """``last.ckpt`` of the ``fit`` run that a step logged as ``name`` into its folder ``step``."""
    return Path(step) / name / "version_0" / "checkpoints" / "last.ckpt"


def corpus_manifest(corpus: Path) -> Path:
    """A synthetic corpus folder's ``manifest.jsonl`` (one JSON object per clip: ``id``, ``caption``, ...)."""
    return Path(corpus) / "manifest.jsonl"


def corpus_videos(corpus: Path) -> Path:
    """The folder of a synthetic corpus' videos (``<id>.mp4``, the clip's audio muxed in)."""
    return Path(corpus) / "videos"


def corpus_video(corpus: Path, clip_id: str) -> Path:
    """The video of clip ``clip_id`` in a synthetic corpus folder."""
    return corpus_videos(corpus) / f"{clip_id}.mp4"


@dataclass(frozen=True)
class DemoLayout:
    """The artefacts of a demo-style run folder ``root`` (``runs/demo``, ``runs/study``), one property each.

    The parametrised ones (:meth:`features`, :meth:`prefix_kv`, :meth:`pretrain_checkpoint`,
    :meth:`pretrain_export`) default to the demo's names; the study adds random-sync caches and one
    pretraining run per seed or ablation.
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def steps(self) -> Path:
        """The pipeline's record of finished steps (its ``_settings``: the run's arguments)."""
        return self.root / STEPS

    @property
    def summary(self) -> Path:
        """The run's summary of the held-out scores."""
        return self.root / "summary.json"

    @property
    def corpus(self) -> Path:
        """The synthetic training corpus."""
        return self.root / "corpus"

    @property
    def heldout(self) -> Path:
        """The synthetic held-out corpus."""
        return self.root / "heldout"

    @property
    def sync_weights(self) -> Path:
        """The trained synchrony encoder's export (its visual branch makes the sync tokens; DeSync scores with it)."""
        return self.root / "sync" / "export" / SYNC_EXPORT

    @property
    def sync_metrics(self) -> Path:
        """The synchrony encoder's held-out offset accuracy (``val/acc``, ``val/acc_within_one``)."""
        return self.sync_weights.with_name(SYNC_METRICS)

    @property
    def vocoder(self) -> Path:
        """The tiny BigVGAN vocoder's checkpoint."""
        return fit_checkpoint(self.root / "vocoder", "vocoder")

    @property
    def vae_fit(self) -> Path:
        """The mel VAE's training checkpoint (without latent statistics: :attr:`vae` is the one to decode with)."""
        return fit_checkpoint(self.root / "vae", "vae")

    @property
    def vae(self) -> Path:
        """The mel VAE with the training corpus' latent statistics (what the caches and decoders use)."""
        return self.root / "latent_stats" / "vae.ckpt"

    def features(self, corpus: str = "corpus", caches: str = "features") -> Path:
        """The feature cache ``<caches>_<corpus>`` (``corpus``: ``corpus`` or ``heldout``)."""
        return self.root / f"{caches}_{corpus}"

    @property
    def features_corpus(self) -> Path:
        """The training set's feature cache."""
        return self.features("corpus")

    @property
    def features_heldout(self) -> Path:
        """The held-out set's feature cache."""
        return self.features("heldout")

    def prefix_kv(self, corpus: str, name: str, caches: str = "features") -> Path:
        """The stored MLLM prompts ``name`` inside a feature cache."""
        return prefix_store_dir(self.features(corpus, caches), name)

    @property
    def mllm(self) -> Path:
        """The tiny local Qwen2.5-VL folder."""
        return self.root / "mllm"

    @property
    def clip(self) -> Path:
        """The tiny local CLIP folder (the study's ``no_queries`` row)."""
        return self.root / "clip"

    def pretrain_checkpoint(self, run: str = "pretrain") -> Path:
        """The MM-DiT pretraining run ``run``'s last checkpoint."""
        return fit_checkpoint(self.root / run, "pretrain")

    def pretrain_export(self, run: str = "pretrain") -> Path:
        """The MM-DiT pretraining run ``run``'s EMA export."""
        return self.root / run / "export" / MERGED

    @property
    def pretrained(self) -> Path:
        """The demo's pretrained EMA export (what preference data and post-training start from)."""
        return self.pretrain_export()

    @property
    def reward_sync(self) -> Path:
        """The synchrony reward's own Synchformer export (``--reward sync``)."""
        return self.root / "reward" / "export" / SYNC_EXPORT

    @property
    def reward_classifier(self) -> Path:
        """The alignment classifier's export (``--reward classifier``)."""
        return self.root / "reward" / "export" / REWARD_EXPORT

    @property
    def preference_groups(self) -> Path:
        """The preference data's group store."""
        return self.root / "preference_data" / "groups"

    @property
    def post_train_export(self) -> Path:
        """Flow-DPO post-training's export folder (LoRA adapter + merged weights)."""
        return self.root / "post_train" / "export"

    def generated(self, model: str) -> Path:
        """The held-out generations of ``model`` (``pretrained``, ``post_trained``): ``<id>.mp4`` and ``audio/``."""
        return self.root / "generate" / model

    @property
    def generate_metrics(self) -> Path:
        """The generation step's scores, per clip."""
        return self.root / "generate" / "metrics.json"

    @property
    def evaluate_results(self) -> Path:
        """The folder evaluator's results (``reasonaudio-metrics`` on the post-trained outputs)."""
        return self.root / "evaluate" / "results.json"
