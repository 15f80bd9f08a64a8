"""dsc: dense-sample deep learning, tracked in MLflow.

The map of the package. Folders name the layers; arrows point down only (a job may use every
layer; `core` uses none; `data` and `nn` never use `tracking`; `figures` never uses `tracking`
or `nn`). ``tests/test_layout.py`` holds these rules, and that every module is named here.

`errors`            the one-line errors every layer raises (DscError and its kinds)
`settings`          every setting declared once, one frozen dataclass per concern:
  `settings.base`       how a setting is declared (default, type, range, choices, help) and checked
  `settings.data`       data: which images, at what size, split how
  `settings.model`      the network's architecture and sizes
  `settings.train`      optimisation, what each epoch records, where the run goes
  `settings.analysis`   analysing a run, comparing runs, sweeping a grid
`core`              science on NumPy/SciPy/scikit-learn/lmfit arrays (no torch, MLflow, matplotlib, click):
  `core.spectra`        ESDs of weight matrices, power-law tails, Martin & Mahoney phases
  `core.mp`             the Marchenko-Pastur law: density, CDF, fit, KS distance
  `core.similarity`     linear CKA and layer correlations
  `core.timeline`       PCA timeline, class emergence (silhouette view), change point
  `core.emergence`      when each class is learned, by behaviour and by linear probes of each layer
  `core.attribution`   per-class decompositions, and which classes make each process
  `core.saxe`          the data's input-output modes and the class order they predict
  `core.collapse`      neural collapse of a layer's features (NC1 to NC4)
  `core.events`        the event timeline: the epoch each signal changes
  `core.analysis_helpers` small helpers of the run analysis (metric lookups, leading units, picks)
  `core.modes`          SVD modes of weight matrices, two-segment power law
  `core.lld`            the logistic learning decomposition (a package):
  `core.lld.decompose`  one curve fitted for one N, or N chosen by BIC
  `core.lld.results`    what a fit and a choice of N return
  `core.lld.search`     its fast multi-start search
  `core.lld.model`      its model of record in lmfit's terms, and the final fit
  `core.lld.batch`      decompositions of many curves in worker processes
  `core.groups`         runs grouped by a param: means, t intervals, mean curves, Spearman trends
  `core.class_groups`   two predictors of N from per-class fits, and their agreement with N
  `core.power`          the smallest Spearman rho a test over n runs detects
  `core.snapshot`       the per-epoch snapshot computed from arrays, and written
  `core.snapshot_files` its files: one .npz per epoch and the probe's, written and read back
  `core.atomic`         atomic file writes
  `core.zips`           zip archives written with their entries deflated on two threads
  `core.lapack`         BLAS ssyrk and LAPACK ssyevr called without holding the GIL
  `core.jsonsafe`       plain-JSON conversion of results
  `core.scores`         a probe's logits as loss, accuracy, per-class recall and true-class probability
`data`              datasets:
  `data.base`           the in-memory ImageSet every source produces
  `data.lights`         Yale B's 64 light directions and 9 poses
  `data.faces`          synthetic faces: identities, height fields, albedo, Lambertian renderer
  `data.synthetic`      the synthetic stand-in for Yale B, generated and cached
  `data.yale`           Yale Face Database B from a local path or its archives
  `data.folder`         any ImageFolder tree
  `data.images`         reading image files, errors that name the bad file
  `data.cache`          where generated data and extracted archives are kept
  `data.dataset`        a --data spec to normalised tensors with a stratified split
`nn`                torch:
  `nn.model`            DenseVGG (the paper's network) and VGG-11
  `nn.conv3`            DenseVGG's 3->3 channel 3x3 convolutions + ReLU (+ pooling) on CPU, for torch
  `nn.conv3_kernels`    their numba kernels: padded maps, image by image, forward and backward
  `nn.train`            the training loop, reporting each epoch to a callback
  `nn.layers`           which modules of any model are recorded, by name (wrappers looked through)
  `nn.probe`            the probe: labelled inputs passed through any model, leaving its training as it was
  `nn.capture`          activation hooks riding on the validation pass
  `nn.checkpoint`       what a checkpoint holds to continue exactly
  `nn.modes`            the model with layers cut to k singular modes, evaluated
`figures`           matplotlib, arrays in and a Figure out:
  `figures.style`       palettes, labels, builders, output
  `figures.curves`      learning curves and the change point
  `figures.pca`         PCA scatters, timelines and class emergence
  `figures.inputs`      variance maps and most activating inputs
  `figures.similarity`  layer similarity over epochs
  `figures.spectra`     spectral metrics, phases and ESD histograms
  `figures.modes`       metrics against modes kept
  `figures.lld`         one run's decomposition and fits across runs
  `figures.groups`      grouped runs: mean curves with bands, quantities against the param
  `figures.emergence`   recall levels and the layer x class emergence grid
  `figures.attribution` overall components with per-class fits coloured by attribution
  `figures.order`      predicted against observed class order, the network's mode strengths
  `figures.collapse`   neural collapse over epochs, the classifier's spikes against C - 1
  `figures.events`     every signal's change on one epoch axis
  `figures.animation`   the PCA plane over epochs as a GIF
  `figures.epoch_images` the per-epoch pictures of the MLflow UI's image grid (PCA, ESD, CKA)
  `figures.report`      the self-contained HTML report
`tracking`          the only package that imports MLflow:
  `tracking.store`      runs: create or attach, params, metrics, histories, lookups
  `tracking.artifacts`  checkpoints and snapshot directories, and their completion tags
  `tracking.snapshot`   a run's snapshots downloaded and read back as arrays (`snapshot.load`)
  `tracking.datasets`   the splits a run trained on, as MLflow dataset inputs
  `tracking.models`     logged and registered models and their aliases
  `tracking.auth`       who the server says the user is, and what they may write (MLflow's basic-auth app)
  `tracking.integrity`  each uploaded file's SHA-256, recorded and verified
  `tracking.heartbeat`  one writer per run: the heartbeat a training process renews
  `tracking.server`     a loopback mlflow server (and PostgreSQL) for tests and benches
  `tracking.sqlite`     a SQLite store shared by processes: writers wait their turn (a long busy timeout)
`jobs`              the entry points, each composing the layers below:
  `jobs.train`          a training run
  `jobs.resume`         a stopped training run continued from its last complete checkpoint
  `jobs.recording`      what ``dsc train`` and the Recorder share: each epoch's snapshot and checkpoint
  `jobs.recorder`       the Recorder: every epoch of any model and loop recorded
  `jobs.recorder_checks` its checks of what a user gives it
  `jobs.checkpoints`    a run's checkpoints and metrics each epoch: weights, the best model, states
  `jobs.snapshots`      a run's snapshot each epoch: activations, spectra, similarity, uploaded
  `jobs.snapshot`       snapshots recomputed from checkpoints
  `jobs.pictures`       each snapshot's pictures in the MLflow image grid, step = epoch
  `jobs.register`       any epoch's checkpoint registered as a model version
  `jobs.stages`         named stages where a test stops a job, to check what a kill leaves
  `jobs.analyze`        the analysis of one run (a package):
  `jobs.analyze.job`    the command and its pipeline, top to bottom
  `jobs.analyze.plumbing` what every step shares: the figure writer, a skipped step
  `jobs.analyze.source` what analyze reads from a run
  `jobs.analyze.steps`  its steps on snapshots and curves
  `jobs.analyze.images` its steps that need the images rebuilt
  `jobs.analyze.classes` its steps on classes: emergence and the per-class decomposition
  `jobs.analyze.recorded` what it reads of a Recorder's run: probe inputs, the logged model
  `jobs.analyze.order`  its step on what predicted the order of the classes
  `jobs.analyze.collapse` its step on neural collapse per epoch
  `jobs.analyze.events` its event timeline, the report's first section
  `jobs.break_ranks`    the break rank of each layer's mode-importance power law, from a final checkpoint
  `jobs.compare`        the decomposition across runs, in a comparison run
  `jobs.compare_figures` its figures: the overlay, centres against widths, R²
  `jobs.compare_groups` the compared runs grouped by params, seeds as replicates
  `jobs.compare_classes` each compared run's class curves decomposed, and the predictors of N
  `jobs.sweep`          a grid of parallel training runs, then compare (a package):
  `jobs.sweep.job`      the command and its local engine
  `jobs.sweep.members`  a sweep's grid checked and expanded, each member's run
  `jobs.sweep.batch`    several sweep members trained one after another in one process
  `jobs.sweep.cluster`  the ray engine: members as Ray tasks, lost ones resumed
  `jobs.sweep_ray`      its former import path, kept for code that imports it
`integrations`      adapters of the recorder to training frameworks:
  `integrations.lightning` the Lightning callback (imports Lightning; nothing else does)
`cli`               the click commands, generated from the settings

Public names at the top level (imported on first use, so that ``import dsc`` stays light):
``dsc.Recorder`` (:class:`dsc.jobs.recorder.Recorder`) and ``dsc.list_layers``
(:func:`dsc.nn.layers.list_layers`).
"""

_LAZY = {"Recorder": ("dsc.jobs.recorder", "Recorder"), "list_layers": ("dsc.nn.layers", "list_layers")}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'dsc' has no attribute {name!r}")
