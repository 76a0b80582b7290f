"""Machine facts recorded with every benchmark: the CPU flags that decide int8/bf16 speed."""

from leanrank.core.machine import cpu_features, machine_info

CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_tile
processor\t: 1
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_tile
"""


def test_cpu_features_picks_the_speed_flags_in_a_fixed_order():
    assert cpu_features(CPUINFO) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
    assert cpu_features("model name: x\n") == []


def test_machine_info_records_them():
    info = machine_info()
    assert isinstance(info["cpu_features"], list) and info["cpus"] >= 1
