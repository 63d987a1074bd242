"""``persona preprocess``: any talking-head video (or frame folder, or NerFACE / AD-NeRF folder) to
a folder that ``persona train --data`` reads (NerFACE layout + aud.npy + EG3D dataset.json).

One job per module: :mod:`.decode` (ffmpeg frames + audio), :mod:`.landmarks` (mediapipe face
mesh), :mod:`.crop` (FFHQ-style framing), :mod:`.camera` (EG3D cameras from a rigid fit),
:mod:`.expression` (pose-free landmark code), :mod:`.quicklook` (figure), :mod:`.pipeline`
(the command and the atomic writer).
"""
