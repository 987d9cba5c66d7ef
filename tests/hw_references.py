"""Slow, obviously-correct references of SCALE-Sim's buffer rules, shared by the memory-system tests.

Each steps one read or one demand line at a time, as SCALE-Sim itself does, so the fast replays in
:mod:`effnn.hw.memory` are checked against the rule, not against themselves (docs/hardware.md quirks 11, 15).
"""

from __future__ import annotations

from collections.abc import Iterable

from effnn.hw.memory import ConvGeometry, ReadBufferTrace, _miss_stall, _WriteBuffer


def read_by_read_misses(stream: Iterable[int], capacity: int) -> int:
    """SCALE-Sim's CALC read buffer one read at a time: a miss adds the address; the ``capacity``-th
    distinct address held empties the buffer (quirk 11)."""
    held: set[int] = set()
    misses = 0
    for address in stream:
        if address not in held:
            misses += 1
            held.add(address)
            if len(held) == capacity:
                held = set()
    return misses


def stepped_user_mode(writes: Iterable[int], ifmap: ReadBufferTrace, filt: ReadBufferTrace, size: int,
                      bandwidth: int) -> tuple[int, int, int, int]:
    """The USER stall loop (quirk 15) with every demand line stepped, no skipping: (total cycles, stall
    cycles, DRAM writes, last write cycle)."""
    writes = list(writes)
    buffer = _WriteBuffer(size, bandwidth)
    stall, state = 0, [0, 0, 0, 0]
    if_lines, f_lines = ifmap.miss_lines.tolist() + [-1], filt.miss_lines.tolist() + [-1]
    for line, count in enumerate(writes):
        cycle = line + stall
        worst = _miss_stall(ifmap, filt, if_lines, f_lines, state, line, cycle)
        done = buffer.write(count, cycle) if count else cycle
        stall += max(worst, done - cycle)
    buffer.finish(len(writes) - 1 + stall)
    return len(writes) - 1 + stall, stall, buffer.counted, buffer.last_end


def ifmap_address_by_definition(geo: ConvGeometry, m: int, k: int) -> int:
    """One ifmap address from the conv definition: SCALE-Sim's ``(y * W + x) * C + c`` layout, images
    stacked, -1 where window element ``k`` of output pixel ``m`` lies in the padding or past the
    bottom/right edge."""
    image, pixel = divmod(m, geo.image_pixels) if geo.image_pixels else (0, m)
    oy, ox = divmod(pixel, geo.out_w)
    ky, rest = divmod(k, geo.kernel_w * geo.channels)
    kx, c = divmod(rest, geo.channels)
    y, x = oy * geo.stride_h + ky - geo.pad_h, ox * geo.stride_w + kx - geo.pad_w
    if not (0 <= y < geo.in_h and 0 <= x < geo.in_w):
        return -1
    return ((image * geo.in_h + y) * geo.in_w + x) * geo.channels + c
