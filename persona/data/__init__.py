"""Data: the synthetic talking-head world and the real dataset formats.

* :mod:`.synthetic` - procedural heads with ground truth (identities, 76-d expressions, cameras,
  novel views), the prior corpus (``sample_prior_batch``), the benchmark builder.
* :mod:`.audio` - speech-like audio in sync with the mouth; 29-d features at 50 fps (a stand-in
  for DeepSpeech 0.1.0 logits); AD-NeRF's ``aud.npy`` windows [N,16,29].
* :mod:`.formats` - read/write NerFACE ``transforms_*.json``, AD-NeRF ``transforms_*.json`` +
  ``aud.npy``, EG3D ``dataset.json``, with validation.
* :mod:`.dataset` - ``FrameDataset`` / ``NovelViewDataset`` (torch datasets).

Build the synthetic benchmark: ``python -m persona data build --profile smoke|default``
(``data/synthetic/<profile>/``); overview figure: ``python -m persona data figure``.

Real data: point ``FrameDataset`` at a NerFACE folder (``transforms_{train,val,test}.json`` +
images) or an AD-NeRF folder (``transforms_{train,val}.json`` + ``head_imgs/`` + ``aud.npy`` +
``bc.jpg``). Head poses become EG3D labels (OpenGL -> OpenCV axes, pixel -> normalised
intrinsics, translation scaled so the median train camera sits 2.7 from the head origin). A real
DeepSpeech ``aud.npy`` is used unchanged; a folder with only ``aud.wav`` is featurised here.
"""
