import Foundation
import HypervisorTesting
import Hypervisor
import Testing

/// The cloud-hypervisor binary, run as a user runs it, booting tiny PVH kernels on this
/// host's /dev/kvm (a stock Linux kernel cannot run here; see the nested end-to-end tests).
@Suite("cloud-hypervisor binary")
struct BinaryTests {
    static let kvmAvailable = (try? KVMHypervisor()) != nil

    /// The binary sits next to the test bundle in the build folder.
    static var binary: String {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        return testBinary.deletingLastPathComponent().appendingPathComponent("cloud-hypervisor").path
    }

    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String], input: [UInt8]? = nil, timeout: TimeInterval = 60) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        // Files, not pipes: a chatty VMM (a guest resetting in a loop logs each boot) would fill
        // a pipe nobody reads until it exits, block on its next log line and never exit.
        let outPath = try temporaryFile("run-\(UUID().uuidString).out", []), errPath = try temporaryFile("run-\(UUID().uuidString).err", [])
        defer { for path in [outPath, errPath] { try? FileManager.default.removeItem(atPath: path) } }
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath)), err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        defer { try? out.close(); try? err.close() }
        process.standardOutput = out
        process.standardError = err
        let inputPipe = Pipe()
        process.standardInput = input == nil ? FileHandle.nullDevice : inputPipe
        try process.run()
        if let input {
            // All at once: far more than the UART's 64-byte receive FIFO holds.
            inputPipe.fileHandleForWriting.write(Data(input))
        }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return Run(status: process.terminationStatus,
                   stdout: String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: outPath))) ?? Data(), as: UTF8.self),
                   stderr: String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: errPath))) ?? Data(), as: UTF8.self))
    }

    static func temporaryFile(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "ch-binary-test-\(getpid())-\(name)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// mov dx,0x3f8; mov al,'!'; out dx,al; mov al,0x41; out 0x80,al; mov al,'O'; out dx,al; mov al,'K'; out dx,al;
    /// mov al,10; out dx,al; mov dx,0x600; mov al,0x34; out dx,al; 1: hlt; jmp 1b
    static let printAndPowerOff: [UInt8] = [
        0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xB0, 0x41, 0xE6, 0x80, 0xB0, 0x4F, 0xEE, 0xB0, 0x4B, 0xEE,
        0xB0, 0x0A, 0xEE, 0x66, 0xBA, 0x00, 0x06, 0xB0, 0x34, 0xEE, 0xF4, 0xEB, 0xFD,
    ]

    @Test("A tiny PVH kernel prints on the serial port, logs boot progress and powers off through ACPI S5",
          .enabled(if: kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func tinyKernelPowersOff() throws {
        let kernel = try Self.temporaryFile("tiny.elf", TinyKernel.pvhELF(code: Self.printAndPowerOff))
        let serial = kernel + ".serial"
        defer { try? FileManager.default.removeItem(atPath: kernel); try? FileManager.default.removeItem(atPath: serial) }
        let run = try Self.run(["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--cpus", "boot=2", "--memory", "size=64M"])
        #expect(run.status == 0, "stderr: \(run.stderr)")
        #expect(try String(contentsOfFile: serial, encoding: .utf8) == "!OK\n")
        #expect(run.stderr.contains("[Debug I/O port: Kernel code 0x41]"), "the debug port logs boot progress")
        #expect(run.stderr.contains("via the PVH boot protocol"))
        #expect(run.stderr.contains("the guest shut down"))
    }

    @Test("Many vCPUs: the MP table moves to the BIOS area when it does not fit below the EBDA",
          .enabled(if: kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func manyVCPUs() throws {
        let kernel = try Self.temporaryFile("many.elf", TinyKernel.pvhELF(code: Self.printAndPowerOff))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let run = try Self.run(["--kernel", kernel, "--serial", "tty", "--console", "off", "--cpus", "boot=48", "--memory", "size=64M"])
        #expect(run.status == 0 && run.stdout == "!OK\n", "\(run.stderr)")
    }

    @Test("The serial port on standard output with --serial tty", .enabled(if: kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func serialOnStdout() throws {
        let kernel = try Self.temporaryFile("tty.elf", TinyKernel.pvhELF(code: Self.printAndPowerOff))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let run = try Self.run(["--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=32M"])
        #expect(run.status == 0 && run.stdout == "!OK\n", "\(run)")
    }

    /// 1: mov dx,0x3fd; 2: in al,dx; test al,1; jz 2b; mov dx,0x3f8; in al,dx; out dx,al; cmp al,10; jne 1b;
    /// mov dx,0x600; mov al,0x34; out dx,al; 3: hlt; jmp 3b   (echo serial input until a newline, then S5)
    static let echoUntilNewline: [UInt8] = [
        0x66, 0xBA, 0xFD, 0x03, 0xEC, 0xA8, 0x01, 0x74, 0xFB, 0x66, 0xBA, 0xF8, 0x03, 0xEC, 0xEE, 0x3C, 0x0A, 0x75, 0xED,
        0x66, 0xBA, 0x00, 0x06, 0xB0, 0x34, 0xEE, 0xF4, 0xEB, 0xFD,
    ]

    @Test("Serial input longer than the receive FIFO reaches the guest whole (backpressure, not loss)",
          .enabled(if: kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func longSerialInputIsNotLost() throws {
        let kernel = try Self.temporaryFile("echo.elf", TinyKernel.pvhELF(code: Self.echoUntilNewline))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let line = (0..<300).map { i in UInt8(ascii: "a") + UInt8(i % 26) } + [0x0A]
        let run = try Self.run(["--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=32M"], input: line, timeout: 120)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(Array(run.stdout.utf8) == line, "the guest echoed \(run.stdout.utf8.count) of \(line.count) bytes")
    }

    @Test("SIGTERM stops a running VM cleanly with exit status 0", .enabled(if: kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func sigtermStopsTheVM() throws {
        // mov dx,0x3f8; mov al,'!'; out dx,al; 1: hlt; jmp 1b   (prints, then idles for ever)
        let kernel = try Self.temporaryFile("idle.elf", TinyKernel.pvhELF(code: [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xF4, 0xEB, 0xFD]))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--cpus", "boot=2", "--memory", "size=32M"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Wait for the guest's first byte: the VM runs.
        let first = out.fileHandleForReading.readData(ofLength: 1)
        #expect(first == Data("!".utf8))
        process.terminate()   // SIGTERM
        process.waitUntilExit()
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationReason == .exit && process.terminationStatus == 0, "\(log)")
        #expect(log.contains("stopped by signal 15"), "\(log)")
    }

    @Test("A file that is no kernel is refused with a reason and exit status 1")
    func badKernel() throws {
        let kernel = try Self.temporaryFile("garbage", Array(repeating: 0x90, count: 4096))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let run = try Self.run(["--kernel", kernel, "--serial", "null"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("neither an ELF vmlinux nor a bzImage"), "\(run.stderr)")
        let truncated = try Self.temporaryFile("truncated", Array(TinyKernel.pvhELF(code: Self.printAndPowerOff).prefix(100)))
        defer { try? FileManager.default.removeItem(atPath: truncated) }
        let second = try Self.run(["--kernel", truncated])
        #expect(second.status == 1 && second.stderr.contains("truncated"), "\(second.stderr)")
        let missing = try Self.run(["--kernel", "/nonexistent/vmlinux"])
        #expect(missing.status == 1 && missing.stderr.contains("/nonexistent/vmlinux"), "\(missing.stderr)")
    }

    @Test("Bad options name the option and the accepted forms; exit status 64")
    func badOptions() throws {
        let unknown = try Self.run(["--frobnicate"])
        #expect(unknown.status == 64 && unknown.stderr.contains("--frobnicate"))
        let cpus = try Self.run(["--kernel", "/k", "--cpus", "boot=2,max=1"])
        #expect(cpus.status == 64 && cpus.stderr.contains("--cpus: max=1 is below boot=2"), "\(cpus.stderr)")
        let serial = try Self.run(["--kernel", "/k", "--serial", "tty,iommu=on"])
        #expect(serial.status == 64 && serial.stderr.contains("accepted keys: mode, file, socket"), "\(serial.stderr)")
        let noKernel = try Self.run([])
        #expect(noKernel.status == 64 && noKernel.stderr.contains("--kernel"), "\(noKernel.stderr)")
        let version = try Self.run(["--version"])
        #expect(version.status == 0 && version.stdout.hasPrefix("cloud-hypervisor v"))
    }

    @Test("Disks: attached and logged, a missing image and a locked image are refused with the path",
          .enabled(if: kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func disks() throws {
        let kernel = try Self.temporaryFile("disk.elf", TinyKernel.pvhELF(code: Self.printAndPowerOff))
        let a = try Self.temporaryFile("a.raw", [UInt8](repeating: 0, count: 1 << 20))
        let b = try Self.temporaryFile("b.raw", [UInt8](repeating: 0, count: 1 << 20))
        defer { for path in [kernel, a, b] { try? FileManager.default.removeItem(atPath: path) } }
        let run = try Self.run(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=64M",
                                "--disk", "path=\(a),num_queues=2", "path=\(b),readonly=on"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("_disk0: \(a), 1048576 bytes, 2 queue(s) of 128"), "\(run.stderr)")
        #expect(run.stderr.contains("_disk1: \(b), 1048576 bytes, read-only"), "\(run.stderr)")
        #expect(run.stderr.contains("virtio-block at 0000:00:03.0"), "\(run.stderr)")

        let missing = try Self.run(["--kernel", kernel, "--disk", "path=/nonexistent/disk.img"])
        #expect(missing.status == 1 && missing.stderr.contains("/nonexistent/disk.img"), "\(missing.stderr)")
        let twice = try Self.run(["--kernel", kernel, "--disk", "path=\(a)", "--disk", "path=\(a)"])
        #expect(twice.status == 64 && twice.stderr.contains("given twice"), "\(twice.stderr)")

        // Another process holds the image's write lock (an OFD lock, F_OFD_SETLK = 37, as a
        // running VMM does): a second VMM must not use the image, not even read-only.
        let lock = Process()
        lock.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        lock.arguments = ["python3", "-c", """
            import fcntl, os, struct, sys, time
            fd = os.open(sys.argv[1], os.O_RDWR)
            fcntl.fcntl(fd, 37, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
            print('locked', flush=True)
            sys.stdin.read()
            """, a]
        let out = Pipe(), input = Pipe()
        lock.standardOutput = out
        lock.standardInput = input
        try lock.run()
        // Closing its standard input ends the lock holder.
        defer { try? input.fileHandleForWriting.close(); lock.waitUntilExit() }
        #expect(out.fileHandleForReading.readData(ofLength: 6) == Data("locked".utf8))
        let locked = try Self.run(["--kernel", kernel, "--disk", "path=\(a)"])
        #expect(locked.status == 1 && locked.stderr.contains("\(a) is in use by another process"), "\(locked.stderr)")
        let readOnly = try Self.run(["--kernel", kernel, "--disk", "path=\(a),readonly=on"])
        #expect(readOnly.status == 1 && readOnly.stderr.contains("in use"), "\(readOnly.stderr)")
    }
}
