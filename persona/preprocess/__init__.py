"""``persona preprocess``: any talking-head video (or frame folder, or NerFACE / AD-NeRF folder) to
a folder that ``persona train --data`` reads (NerFACE layout + aud.npy + EG3D dataset.json).

One job per module: :mod:`.decode` (ffmpeg frames + audio), :mod:`.landmarks` (mediapipe face
mesh), :mod:`.crop` (FFHQ-style framing), :mod:`.camera` (EG3D cameras from a rigid fit),
:mod:`.expression` (pose-free landmark code), :mod:`.background` (background plate),
:mod:`.quicklook` (figure and video), :mod:`.pipeline` (the command and the atomic writer),
:mod:`.synthetic_clip` (a talking mp4 with known cameras: ground truth), :mod:`.bench` (speed).
"""
