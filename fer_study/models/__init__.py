"""Models: the Neural Resizer (Eq. 1), f_sr backends (DIC, spandrel, facesr), STN, timm backbones."""

from fer_study.models.backbones import BACKBONES, build_backbone, make_head
from fer_study.models.classifier import ModelConfig, NeuralResizerClassifier
from fer_study.models.dic import DIC, load_dic
from fer_study.models.facesr import FaceSR
from fer_study.models.resizer import LearnToResize
from fer_study.models.sr import SuperResolver
from fer_study.models.stn import STN

__all__ = ["BACKBONES", "DIC", "STN", "FaceSR", "LearnToResize", "ModelConfig", "NeuralResizerClassifier",
           "SuperResolver", "build_backbone", "load_dic", "make_head"]
