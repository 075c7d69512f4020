"""The planner reads XLA's out-of-memory figures with every binary prefix, petabytes included."""




def test_planner_reads_petabyte_figures():
    from sharesnet_jax.preflight.hlo import parse_out_of_memory

    assert parse_out_of_memory("Ran out of memory in memory space hbm. Used 1.53P of 15.75G "
                               "hbm.") == (int(1.53 * 2**50), int(15.75 * 2**30))
    assert parse_out_of_memory("(2.5E) exceeds available HBM (16G)")[0] == int(2.5 * 2**60)
