"""Small simulated inputs shared by the engine tests."""
from picker3d.engine.formats.table import CoordTable


def small_dataset(seed):
    """A 64³ tomogram at SNR 2 with ten barrels and no distractors, and its table."""
    from picker3d.engine.simulation.dataset import simulate_tomogram
    s = simulate_tomogram(shape=(64, 64, 64), seed=seed, snr=2.0, species=["barrel"], counts={"barrel": 10},
                          crowders=0, vesicles=0, membranes=0, gold=0)
    return s["tomogram"], CoordTable.from_rows(s["rows"])
