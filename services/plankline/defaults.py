"""Defaults of ``plankline train``, in one place: the command line and
``model.train.TrainConfig`` read them here, so they cannot drift apart.

Plain Python with no imports: every ``plankline`` command builds its help from
these values at start-up, and importing the settings (pydantic) or the model
(torch) for them made each command start a second later.
"""


class TrainingDefaults:
    """Defaults of ``plankline train`` chosen on the real multi-instrument benchmark.

    ``scripts/eval_classifier.py`` (README "Classifier") measured them; a
    default changes only when the mean over the real sets improves, never on
    one set.

    Attributes
    ----------
    stop : int
        Epochs. 100 (was 60, 40, first 20). 20 -> 40: the libraries of many classes
        with a few images each (zoolake, 35 x 10; zooscan's big vignettes)
        still underfitted after 20 (split 0: zooscan 0.664 -> 0.748, zoolake
        0.477 -> 0.485, FlowCam even; mean 0.679 -> 0.710). 40 -> 60, once the
        augmentation was cut to rotations and flips (splits 0-1, the same
        final rate): FlowCam 0.892 -> 0.919, lake camera 0.604 -> 0.646,
        ZooScan 0.779 -> 0.787, vicko 0.891 -> 0.891, NDSB subset 0.664 ->
        0.683; mean 0.766 -> 0.785. 60 -> 100 (splits 0-1): lake camera 0.646
        -> 0.651, ZooScan 0.787 -> 0.815, vicko 0.891 -> 0.904, NDSB subset
        0.683 -> 0.686, FlowCam 0.919 -> 0.892; mean 0.785 -> 0.790. Costs
        100 x 1,024 draws: ~6.5 min for a library of 1,000 images on one core
        (~265 images/s).
    lrd : float
        Learning-rate decay per epoch (``ilr * exp(-lrd * epoch)``): 0.02, so
        that the rate at the last epoch is what 60 at 1/30, 40 at 0.05 and 20
        at 0.1 ended with.
    colour : bool
        Feed the organism's colour (``model.data.COLOUR_FEATURES``) beside the
        measurements.
    fill : int
        Crops (and training views, which are trimmed to the organism) whose
        longer side is under 32 px are enlarged to 32 on the 64 px canvas, with
        the log2 scale fed beside the image (was 0: placed unscaled). Splits
        0-1: NDSB subset 0.686 -> 0.726 (0.670 -> 0.723, 0.701 -> 0.728; 4 % of
        its training views are under 32 px, none of its test crops), vicko 0.904
        -> 0.904 (87 % of its crops are under 32 px; 0.891 -> 0.883, 0.916 ->
        0.925); FlowCam, ZooScan and the lake camera have no view under 32 px and
        give identical figures. 48 on split 0: NDSB 0.683, vicko 0.884.
    forest : float
        Weight of the random forest on the measurements in the prediction
        (``model.forest``): 0. On split 0, at 0.33: Scripps camera +0.043 (100
        a class) and +0.060 (40 a class, splits 0-1); lake camera -0.009, NDSB
        subset -0.011 (splits 0-1), ZooScan -0.014, vicko and FlowCam even. The
        mean over the six imagers is +0.003, which is noise, so it is a setting for
        imagers whose measurement baselines are level with the network.
    """

    stop: int = 100
    lrd: float = 0.02
    colour: bool = True
    fill: int = 32
    forest: float = 0.0


TRAINING = TrainingDefaults()
