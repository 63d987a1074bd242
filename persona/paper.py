"""The numbers the paper reports (arXiv 2211.15064v2, Tables 1-4), on its real data.

They appear in our tables ONLY in columns labelled "paper"; nothing in the package computes,
tunes towards or copies them into a reproduced column. Keys: table -> row -> metric.
LPIPS is AlexNet LPIPS; "SyncNet" is the SyncNet confidence (LSE-C) of Table 3.
"""

from __future__ import annotations

PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "table1_reconstruction": {
        "PTI": {"psnr": 32.62, "ssim": 0.959, "lpips": 0.037},
        "Ours RGB": {"psnr": 34.70, "ssim": 0.979, "lpips": 0.024},
    },
    "table2_3dmm": {
        "FOMM": {"psnr": 27.75, "ssim": 0.919, "lpips": 0.059},
        "NerFACE": {"psnr": 29.76, "ssim": 0.931, "lpips": 0.053},
        "NHA": {"psnr": 31.52, "ssim": 0.954, "lpips": 0.039},
        "Ours 3DMM": {"psnr": 34.38, "ssim": 0.972, "lpips": 0.027},
    },
    "table3_audio": {
        "Ground Truth": {"sync": 7.653},
        "AD-NeRF": {"psnr": 29.69, "ssim": 0.934, "lpips": 0.057, "sync": 1.238},
        "DFRF": {"psnr": 30.23, "ssim": 0.939, "lpips": 0.042, "sync": 4.142},
        "Ours Audio": {"psnr": 32.57, "ssim": 0.957, "lpips": 0.035, "sync": 4.866},
    },
    "table4_ablation": {
        "k = 50 (w/o ortho)": {"psnr": 33.36, "ssim": 0.962, "lpips": 0.037},
        "k = 5 (w ortho)": {"psnr": 28.64, "ssim": 0.927, "lpips": 0.055},
        "k = 10 (w ortho)": {"psnr": 30.83, "ssim": 0.946, "lpips": 0.042},
        "k = 20 (w ortho)": {"psnr": 33.98, "ssim": 0.965, "lpips": 0.033},
        "k = 50 (w ortho)": {"psnr": 34.70, "ssim": 0.979, "lpips": 0.024},
    },
}
