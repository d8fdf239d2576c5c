"""Objective metrics: Fréchet distance, KL divergence and Inception Score on audio backbones, CLAP (text–audio),
ImageBind (video–audio), DeSync, and the synthetic benchmark's scores (docs/evaluation.md)."""
from reasonaudio import moved
from reasonaudio.metrics.backbones import AudioBackbone, AudioFeatures, Cnn14, PaSST, VGGish, load_backbone
from reasonaudio.metrics.clap import CLAPScore
from reasonaudio.metrics.desync import DeSync, desync_seconds
from reasonaudio.metrics.frechet import FrechetDistance, frechet_distance
from reasonaudio.metrics.imagebind import IBScore
from reasonaudio.metrics.scores import InceptionScore, KLDivergence, inception_score, kl_divergence
from reasonaudio.metrics.synthetic import OffscreenPresence, OnsetError, OnsetF1, TimbreAgreement

__all__ = ["AudioBackbone", "AudioFeatures", "CLAPScore", "Cnn14", "DeSync", "FrechetDistance", "IBScore",
           "InceptionScore", "KLDivergence", "OffscreenPresence", "OnsetError", "OnsetF1", "PaSST", "TimbreAgreement",
           "VGGish", "desync_seconds", "frechet_distance", "inception_score", "kl_divergence", "load_backbone"]

moved.install_under(__name__)  # old module names of this package (docs/architecture.md)
