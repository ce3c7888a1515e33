// boot-bench: process start to the first guest instruction, and to power-off, for a tiny PVH
// guest booted by the cloud-hypervisor binary on this host's /dev/kvm.
//
//   boot-bench --binary PATH [--runs N]     measure (median of N runs, default 20)
//   boot-bench --write-kernel PATH          only write the tiny kernel
//   boot-bench --write-idle-kernel PATH     write a tiny kernel that prints "!" and then halts
//                                           for ever (the guest of Scripts/bench-memory-per-vm.sh)
//   boot-bench --write-exits-kernel PATH N  write a tiny kernel that makes N rounds of the port
//                                           exits a booting Linux makes most, then powers off
//
// The tiny kernel's first instructions write '!' to the serial port, which cloud-hypervisor
// (--serial tty) writes to a pipe this program reads; it then prints "OK" and powers off
// through the ACPI sleep register, so the VMM exits by itself.
import BenchmarkSupport
import CLinux
import Glibc
import HypervisorTesting

/// mov dx,0x3f8; mov al,'!'; out dx,al; mov al,0x41; out 0x80,al; mov al,'O'; out dx,al;
/// mov al,'K'; out dx,al; mov al,10; out dx,al; mov dx,0x600; mov al,0x34; out dx,al; 1: hlt; jmp 1b
let tinyKernelCode: [UInt8] = [
    0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xB0, 0x41, 0xE6, 0x80, 0xB0, 0x4F, 0xEE, 0xB0, 0x4B, 0xEE,
    0xB0, 0x0A, 0xEE, 0x66, 0xBA, 0x00, 0x06, 0xB0, 0x34, 0xEE, 0xF4, 0xEB, 0xFD,
]

func fail(_ message: String) -> Never { fail(tool: "boot-bench", message) }

/// mov dx,0x3f8; mov al,'!'; out dx,al; mov al,10; out dx,al; 1: hlt; jmp 1b
let idleKernelCode: [UInt8] = [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xB0, 0x0A, 0xEE, 0xF4, 0xEB, 0xFD]

/// A kernel whose exits are those a booting Linux makes most: `count` times (in ECX) a read
/// of the serial port's line status, a byte to its transmitter, and a PCI configuration read
/// through 0xCF8/0xCFC (bus 0, device 0, register 0); then a newline and power-off.
/// mov ecx,count; 1: mov dx,0x3fd; in al,dx; mov dx,0x3f8; mov al,'x'; out dx,al;
/// mov dx,0xcf8; mov eax,0x80000000; out dx,eax; mov dx,0xcfc; in eax,dx; dec ecx; jnz 1b;
/// mov dx,0x3f8; mov al,10; out dx,al; mov dx,0x600; mov al,0x34; out dx,al; 2: hlt; jmp 2b
func exitsKernelCode(count: UInt32) -> [UInt8] {
    let n = withUnsafeBytes(of: count.littleEndian) { Array($0) }
    return [0xB9] + n + [
        0x66, 0xBA, 0xFD, 0x03, 0xEC, 0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x78, 0xEE,
        0x66, 0xBA, 0xF8, 0x0C, 0xB8, 0x00, 0x00, 0x00, 0x80, 0xEF, 0x66, 0xBA, 0xFC, 0x0C, 0xED,
        0x49, 0x75, 0xE2,
        0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x0A, 0xEE, 0x66, 0xBA, 0x00, 0x06, 0xB0, 0x34, 0xEE, 0xF4, 0xEB, 0xFD,
    ]
}

func writeKernel(_ path: String, code: [UInt8] = tinyKernelCode) {
    let image = TinyKernel.pvhELF(code: code)
    let fd = clinux_open_mode(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { fail("cannot create \(path)") }
    _ = image.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

/// One run: (seconds to the first serial byte, seconds to exit, serial output, exit status).
func runOnce(binary: String, kernel: String) -> (first: Double, total: Double, output: String, status: Int32) {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { fail("pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
    let arguments = [binary, "--kernel", kernel, "--serial", "tty", "--console", "off", "--cpus", "boot=1", "--memory", "size=64M"]
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    var pid: pid_t = 0
    let start = now()
    let result = posix_spawn(&pid, binary, &actions, nil, &argv, environ)
    for pointer in argv { free(pointer) }
    posix_spawn_file_actions_destroy(&actions)
    close(pipeFDs[1])
    guard result == 0 else { fail("cannot start \(binary): errno \(result)") }
    var first = -1.0
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 256)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(pipeFDs[0], $0.baseAddress, $0.count) }
        if n <= 0 { break }
        if first < 0 { first = now() - start }
        output += buffer[0..<n]
    }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let total = now() - start
    close(pipeFDs[0])
    let exitStatus = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    return (first, total, String(decoding: output, as: UTF8.self), exitStatus)
}

var arguments = CommandLine.arguments.dropFirst()
var binary: String?
var runs = 20
while let argument = arguments.popFirst() {
    switch argument {
    case "--write-kernel":
        guard let path = arguments.popFirst() else { fail("--write-kernel needs a path") }
        writeKernel(path)
        exit(0)
    case "--write-idle-kernel":
        guard let path = arguments.popFirst() else { fail("--write-idle-kernel needs a path") }
        writeKernel(path, code: idleKernelCode)
        exit(0)
    case "--write-exits-kernel":
        guard let path = arguments.popFirst(), let count = arguments.popFirst().flatMap({ UInt32($0) }), count > 0 else {
            fail("--write-exits-kernel needs a path and a positive number of rounds")
        }
        writeKernel(path, code: exitsKernelCode(count: count))
        exit(0)
    case "--binary":
        binary = arguments.popFirst()
    case "--runs":
        guard let value = arguments.popFirst().flatMap({ Int($0) }), value > 0 else { fail("--runs takes a positive number") }
        runs = value
    default:
        fail("unknown option \(argument); accepted: --binary PATH, --runs N, --write-kernel PATH, --write-idle-kernel PATH, --write-exits-kernel PATH N")
    }
}
guard let binary else { fail("give --binary PATH (the cloud-hypervisor to measure)") }
let kernel = "/tmp/boot-bench-tiny-\(getpid()).elf"
writeKernel(kernel)
defer { unlink(kernel) }
var firsts: [Double] = []
var totals: [Double] = []
for _ in 0..<runs {
    let run = runOnce(binary: binary, kernel: kernel)
    guard run.status == 0, run.output == "!OK\n", run.first >= 0 else {
        fail("unexpected run: status \(run.status), serial output \(run.output.debugDescription)")
    }
    firsts.append(run.first)
    totals.append(run.total)
}
func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
func ms(_ value: Double) -> String { String(Int((value * 10_000).rounded())).withDecimal }
extension String {
    var withDecimal: String { count > 1 ? String(dropLast()) + "." + String(suffix(1)) : "0." + self }
}
unlink(kernel)
print("boot-bench: tiny PVH guest, \(runs) runs: process start to first guest instruction (its first serial byte) median \(ms(median(firsts))) ms (min \(ms(firsts.min()!)) ms); to power-off and exit median \(ms(median(totals))) ms")
