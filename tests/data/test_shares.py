"""Several processes' training shares, at the pipeline level: in every epoch the processes read
disjoint shares that together hold each example at most once (all but fewer than one global
batch of them), and a process resumed at step k continues ITS OWN stream at batch k."""

import collections

import pytest

from sharesnet_jax.data import pipeline as input_pipeline
from tests.data.test_pipeline import (
    NUM_DIGITS_TRAIN, assert_batches_equal, digits_split_hashes, example_hashes, open_digits,
    take, train_stream,
)

LOCAL_BATCH = 64


@pytest.fixture(scope="module")
def two_streams(tmp_path_factory):
    from sharesnet_jax.data import digits

    data_dir = digits.ensure_digits_dataset(str(tmp_path_factory.mktemp("tfds")))
    source, info = open_digits(data_dir, augment="none")  # hashes identify examples
    steps = input_pipeline.steps_per_epoch(info, 2 * LOCAL_BATCH)
    streams = [take(train_stream(source, info, seed=3, local_batch_size=LOCAL_BATCH,
                                 process_index=i, process_count=2), steps + 2)
               for i in range(2)]
    return source, info, steps, streams


def test_each_epoch_reads_every_example_at_most_once_over_both_processes(two_streams):
    _, _, steps, streams = two_streams
    assert steps == NUM_DIGITS_TRAIN // (2 * LOCAL_BATCH)
    epoch = collections.Counter()
    shares = []
    for stream in streams:
        share = [h for batch in stream[:steps] for h in example_hashes(batch)]
        shares.append(set(share))
        epoch.update(share)
    assert max(epoch.values()) == 1  # nothing twice in an epoch, within or across processes
    assert not shares[0] & shares[1]
    train = digits_split_hashes("train")
    assert set(epoch) <= set(train)
    assert len(train) - len(epoch) < 2 * LOCAL_BATCH  # only the remainder is left out
    # The next epoch starts over on each process's own share (a share holds a few examples
    # more than an epoch takes from it, so it is disjoint from the other's, not a subset).
    second = [set(example_hashes(stream[steps])) for stream in streams]
    assert not second[0] & shares[1] and not second[1] & shares[0]


@pytest.mark.parametrize("start_step", [3, 11])  # within the first epoch, and in the second
def test_each_process_resumes_its_own_stream_at_the_step(two_streams, start_step):
    source, info, steps, streams = two_streams
    assert start_step < steps + 2
    for process_index, stream in enumerate(streams):
        resumed = train_stream(
            source, info, seed=3, local_batch_size=LOCAL_BATCH, start_step=start_step,
            process_index=process_index, process_count=2)
        count = min(2, len(stream) - start_step)
        assert_batches_equal(stream[start_step:start_step + count], take(resumed, count))
