import sys, json, torch
name = sys.argv[1]; ov = json.loads(sys.argv[2]); stem_w = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
import os; torch.set_num_threads(int(os.environ.get('NT','1')))
from fer_study.models import backbones as B
from torch import nn
C = {
 "c1_p8e48": dict(patch_size=8, window_size=4, embed_dim=48, depths=(2, 4), num_heads=(3, 6)),
 "c2_p4e48": dict(patch_size=4, window_size=6, embed_dim=48, depths=(2, 4), num_heads=(3, 6)),
 "c6_p4e32_222": dict(patch_size=4, window_size=6, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8)),
 "c7_p8e96": dict(patch_size=8, window_size=4, embed_dim=96, depths=(2, 4), num_heads=(3, 6)),
 "c8_p8e64": dict(patch_size=8, window_size=4, embed_dim=64, depths=(2, 4), num_heads=(4, 8)),
}
for k, kw in C.items():
    B.TINY_BACKBONES[k] = ("swin_tiny_patch4_window7_224", kw); B.BACKBONES[k] = B.TINY_BACKBONES[k]
VGG = stem_w is not None and stem_w[0] == "vgg"
if VGG:
    stem_w = stem_w[1:]
    def conv_stem(cin, cout, stride, kind="conv"):
        n = int(stride).bit_length() - 1
        layers, c = [], cin
        for i in range(n):
            w = stem_w[i]
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        layers.append(nn.Conv2d(c, cout, 1))
        return nn.Sequential(*layers)
    B.conv_stem = conv_stem
elif stem_w:
    def conv_stem(cin, cout, stride, kind="conv"):
        n = int(stride).bit_length() - 1
        layers, c = [], cin
        if len(stem_w) > n:
            w0 = stem_w[n]
            layers += [nn.Conv2d(c, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True)]
            c = w0
        for i in range(n):
            w = stem_w[i]
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        layers.append(nn.Conv2d(c, cout, 1))
        return nn.Sequential(*layers)
    B.conv_stem = conv_stem
from fer_study.config import make_config
from fer_study.training import train
base = {"dataset": "ferplus", "ferplus_root": "/work/shared/data/ferplus", "prior": "psr", "sr_backend": "bicubic",
        "sr_weights": None, "model.up": "bilinear", "model.down": "none", "runs_dir": f"/tmp/exp/runs_{name}",
        "progress": False, "batch_size": 64, "warmup_steps": 200}
base.update(ov)
cfg = make_config("demo", base)
print(train(cfg), flush=True)
