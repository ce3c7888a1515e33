// memory-snapshot-bench: how long a guest memory snapshot takes to save and to restore, in
// both of Cloud Hypervisor's restore modes.
//
//   memory-snapshot-bench [--size MiB] [--data PERCENT] [--touch PERCENT] [--chunk KiB] [--dir PATH]
//
// A guest of --size MiB (1024) gets --data percent (10) of its 4 KiB pages filled with
// non-zero bytes (pages picked at random, the rest never touched), then:
//   save          GuestMemory.saveSnapshot into a file in --dir (sparse: zero pages are holes);
//   copy          restoreSnapshot into fresh memory, file in the page cache and dropped from it
//                 (posix_fadvise DONTNEED, so only this file leaves the cache);
//   ondemand      LazyMemoryRestorer on fresh memory: set-up time, then --touch percent (1) of
//                 the pages read from this thread (each a userfaultfd fault served by the
//                 handler thread), then prefaultRemaining until complete.
// Samples of every restore are compared with the source.
import Glibc
import GuestMemory
import HostSystem

func fail(_ message: String) -> Never {
    writeToStandardError("memory-snapshot-bench: \(message)\n")
    exit(2)
}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

/// `value` with `decimals` digits after the point (no Foundation here).
func fixed(_ value: Double, _ decimals: Int = 3) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int((value * scale).rounded())
    let whole = String(scaled / Int(scale))
    guard decimals > 0 else { return whole }
    let fraction = String(scaled % Int(scale))
    return whole + "." + String(repeating: "0", count: decimals - fraction.count) + fraction
}

/// SplitMix64: a fixed sequence, so every run picks the same pages.
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

var sizeMiB = 1024
var dataPercent = 10.0
var touchPercent = 1.0
var chunkKiB = 4
var directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    let value = arguments.popFirst() ?? ""
    switch argument {
    case "--size": sizeMiB = Int(value) ?? sizeMiB
    case "--data": dataPercent = Double(value) ?? dataPercent
    case "--touch": touchPercent = Double(value) ?? touchPercent
    case "--chunk": chunkKiB = Int(value) ?? chunkKiB
    case "--dir": directory = value
    default: fail("unknown option \(argument) (accepted: --size MiB, --data %, --touch %, --chunk KiB, --dir PATH)")
    }
}

let page = 4096
let size = UInt64(sizeMiB) << 20
let pageCount = Int(size) / page
func fresh() -> GuestMemory {
    do { return try GuestMemory.anonymous([(GuestAddress(0), size)], options: [.noReserve]) } catch { fail("\(error)") }
}
func distinctPages(_ count: Int, seed: UInt64) -> [Int] {
    var random = SplitMix(state: seed)
    var chosen = Set<Int>()
    while chosen.count < count { chosen.insert(Int(random.next() % UInt64(pageCount))) }
    return chosen.sorted()
}

let source = fresh()
let dataPages = distinctPages(Int(Double(pageCount) * dataPercent / 100), seed: 1)
var pattern = [UInt8](repeating: 0, count: page)
for pageIndex in dataPages {
    for index in stride(from: 0, to: page, by: 8) { pattern[index] = UInt8(truncatingIfNeeded: pageIndex &+ index | 1) }
    do { try source.write(bytes: pattern, at: GuestAddress(UInt64(pageIndex * page))) } catch { fail("\(error)") }
}
print("guest: \(sizeMiB) MiB, \(dataPages.count) of \(pageCount) pages hold data (\(dataPercent)%)")

let path = "\(directory)/memory-snapshot-bench-\(getpid())"
let file: OwnedFileDescriptor
do { file = try OwnedFileDescriptor(path: path, flags: O_RDWR | O_CREAT | O_TRUNC, mode: 0o600) } catch { fail("\(error)") }
unlink(path)

var start = ContinuousClock.now
let table: MemoryRangeTable
do { table = try source.saveSnapshot(to: file) } catch { fail("\(error)") }
let saveTime = seconds(since: start)
let allocated = (try? file.allocatedBytes()) ?? -1
print("save:              \(fixed(saveTime)) s  (file \(size >> 20) MiB, \(allocated >> 20) MiB on disk)")

func check(_ memory: GuestMemory, pages: [Int], label: String) {
    for pageIndex in pages.prefix(2000) {
        let at = GuestAddress(UInt64(pageIndex * page))
        guard let restored = try? memory.readBytes(count: page, at: at), let original = try? source.readBytes(count: page, at: at),
              restored == original else { fail("\(label): page \(pageIndex) differs from the source") }
    }
}
let samples = distinctPages(2000, seed: 7)

for cache in ["warm", "cold"] {
    if cache == "cold" {
        _ = fdatasync(file.rawValue)
        _ = posix_fadvise(file.rawValue, 0, 0, POSIX_FADV_DONTNEED)
    }
    let memory = fresh()
    start = ContinuousClock.now
    do { try memory.restoreSnapshot(from: file, table: table) } catch { fail("\(error)") }
    let restoreTime = seconds(since: start)
    check(memory, pages: samples + dataPages.prefix(2000), label: "copy restore")
    print("copy restore:      \(fixed(restoreTime)) s  (page cache \(cache))")
}

_ = posix_fadvise(file.rawValue, 0, 0, POSIX_FADV_DONTNEED)
let lazy = fresh()
start = ContinuousClock.now
let restorer: LazyMemoryRestorer
do { restorer = try LazyMemoryRestorer(memory: lazy, file: file, table: table, chunkSize: chunkKiB << 10) } catch { fail("\(error)") }
let setUp = seconds(since: start)
let touched = distinctPages(Int(Double(pageCount) * touchPercent / 100), seed: 3)
start = ContinuousClock.now
var sum: UInt64 = 0
for pageIndex in touched {
    sum &+= (try? lazy.read(UInt64.self, at: GuestAddress(UInt64(pageIndex * page)))) ?? 0
}
let touchTime = seconds(since: start)
let afterTouch = restorer.statistics
check(lazy, pages: touched, label: "on-demand restore")
print("ondemand set-up:   \(fixed(setUp)) s  (register \(sizeMiB) MiB, chunk \(chunkKiB) KiB)")
print("ondemand touch:    \(fixed(touchTime)) s  (\(touched.count) pages, \(fixed(touchTime * 1e6 / Double(max(touched.count, 1)), 1)) us "
    + "per first touch, page cache cold; \(afterTouch))")
start = ContinuousClock.now
restorer.prefaultRemaining()
do { _ = try restorer.waitUntilComplete() } catch { fail("\(error)") }
print("ondemand prefault: \(fixed(seconds(since: start))) s  to fill the rest (\(restorer.statistics))")
check(lazy, pages: samples + dataPages.prefix(2000), label: "on-demand restore after prefault")
if sum == 0x5EED { print("") }  // keeps the reads
