"""Science: the tensor and array maths of the analyses, with the paper each formula comes from.
No files, no CLI, no model loading.

* :mod:`hubclient.science.lens`: logit lens (decode hidden states through the final norm and ``W_U``);
* :mod:`hubclient.science.probes`: probability of word groups at probe positions;
* :mod:`hubclient.science.stats`: cosine matrices, baseline-adjusted similarity (Wu et al. Eq. 1), bootstrap CIs;
* :mod:`hubclient.science.neurons`: LRDS/SADS, key neurons, LAPE;
* :mod:`hubclient.science.token_languages`: the token → language matrix.
"""
