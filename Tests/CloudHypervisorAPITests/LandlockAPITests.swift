import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Foundation
import Testing
import VMM

/// `landlock_enable` and `landlock_rules` in `vm.create` bodies (Cloud Hypervisor's VmConfig).
@Suite("REST API: Landlock fields")
struct LandlockAPITests {
    @Test("vm.create with landlock_enable and landlock_rules is accepted and vm.info echoes both")
    func echoed() throws {
        let folder = NSTemporaryDirectory()
        let body = #"{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":33554432},"payload":{"kernel":"/nonexistent/vmlinux"},"landlock_enable":true,"landlock_rules":[{"path":"\#(folder)","access":"rw"},{"path":"/dev/null","access":"r"}]}"#
        try withServer { _, path throws in
            let created = try send(path, "PUT", "vm.create", body: body)
            #expect(created.status == 204, "\(messages(created))")
            let info = try send(path, "GET", "vm.info")
            let object = try JSONSerialization.jsonObject(with: Data(info.body)) as? [String: Any]
            let config = object?["config"] as? [String: Any]
            #expect(config?["landlock_enable"] as? Bool == true)
            #expect(config?["landlock_rules"] as? [[String: String]] == [["path": folder, "access": "rw"], ["path": "/dev/null", "access": "r"]])
        }
    }

    @Test("a rule with a bad access or a missing path is refused with 400 naming the field's option and the accepted values")
    func refused() throws {
        try withServer { _, path throws in
            let badAccess = try send(path, "PUT", "vm.create", body: #"{"payload":{"kernel":"/k"},"landlock_enable":true,"landlock_rules":[{"path":"/dev/null","access":"x"}]}"#)
            #expect(badAccess.status == 400)
            #expect(messages(badAccess).joined().contains("--landlock-rules: access=x is not accepted for /dev/null; accepted values: r, w, rw"), "\(messages(badAccess))")
            let missing = try send(path, "PUT", "vm.create", body: #"{"payload":{"kernel":"/k"},"landlock_rules":[{"path":"/nonexistent/ll","access":"r"}]}"#)
            #expect(missing.status == 400)
            #expect(messages(missing).joined().contains("path=/nonexistent/ll does not exist"), "\(messages(missing))")
        }
    }
}
