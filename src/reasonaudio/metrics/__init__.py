# Text–audio (CLAP) and video–audio (ImageBind) scores and the synthetic-benchmark metrics.
from reasonaudio.metrics.clap import CLAPScore
from reasonaudio.metrics.imagebind import IBScore
from reasonaudio.metrics.synthetic_metrics import OffscreenPresence, OnsetError, OnsetF1, TimbreAgreement

# Fréchet distance, KL divergence, Inception Score and DeSync, and the audio backbones they read.
from reasonaudio.metrics.backbones import AudioBackbone, AudioFeatures, load_backbone
from reasonaudio.metrics.backbones_panns import Cnn14
from reasonaudio.metrics.backbones_passt import PaSST
from reasonaudio.metrics.backbones_vggish import VGGish
from reasonaudio.metrics.desync import DeSync, desync_seconds
from reasonaudio.metrics.frechet import FrechetDistance, frechet_distance
from reasonaudio.metrics.scores import InceptionScore, KLDivergence, inception_score, kl_divergence
