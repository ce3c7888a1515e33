// kvm-exit-bench: the cost of a guest exit through the Swift KVM backend, against a C floor
// measured in the same run, and the time from process start to the first guest exit.
//
//   kvm-exit-bench [--iterations N] [--rounds R]
//
// Set CH_BENCH_SPAWN_NS to the wall clock in nanoseconds (`date +%s%N`) just before starting
// the process (Scripts/bench-kvm-exits.sh does) to include exec and loading in the start-up figure.
import CLinux
import Glibc
import HostSystem
import Hypervisor
import HypervisorTesting
import KVMExitFloor

func wallNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

let mainEntry = wallNanoseconds()

struct Options {
    var iterations: UInt32 = 1_000_000
    var rounds = 1
}

func parseOptions() -> Options {
    var options = Options()
    var arguments = CommandLine.arguments.dropFirst()
    while let argument = arguments.popFirst() {
        switch argument {
        case "--iterations":
            guard let value = arguments.popFirst().flatMap({ UInt32($0) }), value > 0 else {
                fatalExit("--iterations takes a positive whole number of exits (up to 4294967295)")
            }
            options.iterations = value
        case "--rounds":
            guard let value = arguments.popFirst().flatMap({ Int($0) }), value > 0 else {
                fatalExit("--rounds takes a positive whole number")
            }
            options.rounds = value
        case "-h", "--help":
            print("usage: kvm-exit-bench [--iterations N (default 1000000)] [--rounds R (default 1)]")
            exit(0)
        default:
            fatalExit("unknown option \(argument); accepted: --iterations N, --rounds R")
        }
    }
    return options
}

func fatalExit(_ message: String) -> Never {
    let line = Array("kvm-exit-bench: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

/// Runs the Swift backend: returns (exits, seconds), and the wall time of the first exit.
func swiftRun(_ kvm: KVMHypervisor, iterations: UInt32) throws -> (exits: UInt64, seconds: Double, firstExitWall: UInt64) {
    let guest = try TinyGuest(hypervisor: kvm)
    var registers = StandardRegisters()
    registers.rdi = UInt64(iterations)
    // mov ecx, edi; 1: out 0x10, al; dec ecx; jnz 1b; out 0x11, al; 2: jmp 2b
    try guest.startUserMode([0x89, 0xF9, 0xE6, 0x10, 0xFF, 0xC9, 0x75, 0xFA, 0xE6, 0x11, 0xEB, 0xFE], registers: registers)
    var exits: UInt64 = 0
    var firstExitWall: UInt64 = 0
    let start = monotonicSeconds()
    loop: while true {
        let exit = try guest.vcpu.run()
        if firstExitWall == 0 { firstExitWall = wallNanoseconds() }
        switch exit {
        case .ioOut(0x10, _): exits += 1
        case .ioOut(0x11, _): break loop
        case .interrupted: continue
        default: throw HypervisorError.invalidArgument("unexpected exit \(exit)")
        }
    }
    return (exits, monotonicSeconds() - start, firstExitWall)
}

let options = parseOptions()
do {
    let kvm = try KVMHypervisor()
    // Start-up: the first exit of a fresh guest, before anything else runs.
    let first = try swiftRun(kvm, iterations: 1)
    let spawn = spawnNanoseconds()
    print("start-up: process start to first guest exit \(String(format2: Double(first.firstExitWall - (spawn ?? mainEntry)) / 1e6)) ms" +
          (spawn == nil ? " (from main; set CH_BENCH_SPAWN_NS to include exec)" : " (from exec)") +
          ", main to first exit \(String(format2: Double(first.firstExitWall - mainEntry) / 1e6)) ms")

    var bestC = Double.infinity
    var bestSwift = Double.infinity
    for round in 1...options.rounds {
        var floor = kvm_exit_floor_result()
        kvm_exit_floor_run(options.iterations, &floor)
        if floor.error != 0 {
            let message = withUnsafeBytes(of: floor.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            fatalExit("C floor failed: \(message)")
        }
        let swift = try swiftRun(kvm, iterations: options.iterations)
        guard floor.exits == UInt64(options.iterations), swift.exits == UInt64(options.iterations) else {
            fatalExit("exit counts differ from \(options.iterations): C \(floor.exits), Swift \(swift.exits)")
        }
        let cRate = Double(floor.exits) / floor.seconds
        let swiftRate = Double(swift.exits) / swift.seconds
        bestC = min(bestC, floor.seconds)
        bestSwift = min(bestSwift, swift.seconds)
        print("round \(round): C floor \(Int(cRate)) exits/s (\(String(format2: floor.seconds * 1e6 / Double(floor.exits))) us/exit), " +
              "Swift backend \(Int(swiftRate)) exits/s (\(String(format2: swift.seconds * 1e6 / Double(swift.exits))) us/exit)")
    }
    let ratio = bestC / bestSwift
    print("port-I/O exits: \(options.iterations) per run, best of \(options.rounds): C floor \(Int(Double(options.iterations) / bestC)) exits/s, " +
          "Swift \(Int(Double(options.iterations) / bestSwift)) exits/s, Swift/C throughput ratio \(String(format2: ratio))x (target 0.90x or better)")
} catch {
    fatalExit("\(error)")
}
