// fuzz-cmdline: KernelCmdline built from fuzzed parts (any bytes, decoded as UTF-8 with
// replacement) under a fuzzed size limit, then written to guest memory. Whatever it
// accepts must fit the limit with its terminator, hold no NUL, and land in memory intact.
import Arch
import FuzzSupport
import GuestMemory

@main
enum CmdlineFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let maxSize = input.bool() ? KernelCmdline.defaultMaxSize : input.int(in: -1...300)
        // Parts are separated by 0xff, which never occurs in UTF-8.
        let parts = input.rest().split(separator: 0xff, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard var cmdline = try? KernelCmdline(parts.first ?? "", maxSize: maxSize) else { return }
        for part in parts.dropFirst() {
            let before = cmdline.text
            do {
                try cmdline.append(part)
            } catch {
                fuzzCheck(cmdline.text == before, "a refused append changed the command line")
            }
        }
        let bytes = cmdline.bytes
        fuzzCheck(bytes.count == cmdline.sizeWithTerminator && bytes.count <= maxSize, "\(bytes.count) bytes against a limit of \(maxSize)")
        fuzzCheck(bytes.last == 0 && !bytes.dropLast().contains(0), "terminator missing or a NUL inside")
        do {
            try cmdline.write(to: LoaderMemory.memory)
            let stored = try LoaderMemory.memory.readBytes(count: bytes.count, at: X86Layout.cmdlineStart)
            fuzzCheck(stored == bytes, "the command line in guest memory differs")
        } catch {
            fuzzCheck(false, "writing \(bytes.count) bytes at the command line address failed: \(error)")
        }
    }
}

/// Typical Linux command lines, as one string and as appended parts.
private func seeds() -> [[UInt8]] {
    [
        [1] + Array("console=ttyS0 reboot=k panic=1 root=/dev/vda1 rw".utf8),
        [1] + Array("console=hvc0".utf8) + [0xff] + Array("quiet".utf8) + [0xff] + Array("init=/sbin/init systemd.unit=rescue.target".utf8),
        [0, 40] + Array("earlyprintk=ttyS0 ip=dhcp".utf8) + [0xff] + Array("x".utf8),
    ]
}
