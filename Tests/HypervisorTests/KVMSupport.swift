import Foundation
import HostSystem
import Hypervisor
import Testing

/// Whether this host's /dev/kvm can be used, and why not.
enum KVMSupport {
    /// The device node; `CH_KVM_DEVICE` overrides it (to exercise the skip path).
    static let path = ProcessInfo.processInfo.environment["CH_KVM_DEVICE"] ?? "/dev/kvm"
    static let opened: Result<KVMHypervisor, HypervisorError> = Result { () throws(HypervisorError) in try KVMHypervisor(path: path) }

    static var hypervisor: KVMHypervisor? { try? opened.get() }
    static var available: Bool { hypervisor != nil }
    static var reason: Comment {
        switch opened {
        case .success: return "KVM available"
        case .failure(let error): return "skipped: \(path) is not usable here: \(error)"
        }
    }
    /// `CH_REQUIRE_KVM=1` (set by .ci/run) turns a missing /dev/kvm into a failure.
    static var required: Bool { ProcessInfo.processInfo.environment["CH_REQUIRE_KVM"] == "1" }

    static func kvm() throws -> KVMHypervisor { try opened.get() }
}

/// A body running on its own thread, with a bounded wait for it to finish.
final class BackgroundRun {
    private let done: EventFD
    private let thread: HostThread

    /// Starts `body` on a new thread.
    init(_ body: @escaping @Sendable () -> Void) throws {
        let done = try EventFD(nonBlocking: true)
        self.done = done
        thread = try HostThread(name: "test-vcpu") {
            body()
            try? done.signal()
        }
    }

    /// Waits at most `seconds` for the body to finish. On time-out it kicks the vCPU (so the
    /// body can return), waits a little more and reports false; a thread that still does not
    /// finish is left behind rather than hanging the test run.
    func wait(seconds: Double, kick: (any VCPUKicker)? = nil) -> Bool {
        if poll(until: Date().addingTimeInterval(seconds)) { return true }
        kick?.kick()
        _ = poll(until: Date().addingTimeInterval(5))
        return false
    }

    private func poll(until deadline: Date) -> Bool {
        while Date() < deadline {
            if (try? done.read()) != nil {
                thread.join()
                return true
            }
            usleep(1_000)
        }
        return false
    }
}

@Suite("KVM availability")
struct KVMAvailabilityTests {
    @Test("/dev/kvm opens when the environment requires it")
    func requiredKVMIsPresent() throws {
        if KVMSupport.required {
            _ = try KVMSupport.kvm()
        } else if !KVMSupport.available {
            // Not required here: the KVM tests are skipped and say why.
            #expect(KVMSupport.reason.description.contains("skipped"))
        }
    }

    @Test("A missing device node explains how to fix it")
    func missingDevice() {
        #expect(throws: HypervisorError.deviceMissing(path: "/dev/no-such-kvm")) {
            _ = try KVMHypervisor(path: "/dev/no-such-kvm")
        }
        let text = HypervisorError.deviceMissing(path: "/dev/kvm").description
        #expect(text.contains("modprobe"))
        #expect(HypervisorError.devicePermissionDenied(path: "/dev/kvm").description.contains("usermod -aG kvm"))
    }
}
