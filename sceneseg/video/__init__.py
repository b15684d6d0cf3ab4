"""From a video file to a movie in the pipeline's converted format: decode once (:mod:`.decode`), cut
into shots (:mod:`.shots`), describe each shot (:mod:`.extractors`, optionally :mod:`.resnet`), label
it from scene start times (:mod:`.annotations`); :mod:`.movie` ties them together and caches the result.

The heavy libraries (PyAV, PySceneDetect) are imported only inside these modules, which the pipeline
imports only when ``data.source`` is ``video`` or for ``sceneseg video``.
"""
