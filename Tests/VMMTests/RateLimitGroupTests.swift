import Foundation
import Testing
@testable import VMM

@Suite("--rate-limit-group: a limit shared by several disks")
struct RateLimitGroupTests {
    @Test("Parses Cloud Hypervisor's syntax; disks name the group; JSON names as the API's")
    func parseAndJSON() throws {
        let group = try RateLimitGroupConfig.parse("bw_size=1048576,bw_refill_time=1000,ops_size=100,ops_refill_time=1000,id=group0")
        #expect(group.id == "group0")
        #expect(group.rateLimiterConfig.bandwidth == TokenBucketConfig(size: 1_048_576, refillTime: 1000))
        #expect(group.rateLimiterConfig.ops == TokenBucketConfig(size: 100, refillTime: 1000))
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: "/k")
        config.rateLimitGroups = [group]
        config.disks = [try DiskConfig.parse("path=/a,rate_limit_group=group0"), try DiskConfig.parse("path=/b,rate_limit_group=group0")]
        try config.validate()
        let json = String(decoding: try JSONEncoder().encode(config), as: UTF8.self)
        #expect(json.contains(#""rate_limit_groups":[{"#) && json.contains(#""rate_limit_group":"group0""#), "\(json)")
        #expect(try JSONDecoder().decode(VMConfig.self, from: Data(json.utf8)) == config)
    }

    @Test("Refusals name the option and what it accepts",
          arguments: [
            ("bw_size=1000,bw_refill_time=10", "id= is required"),
            ("id=g", "sets no limit"),
            ("id=g,bw_size=10", "bw_size= needs bw_refill_time="),
            ("id=g,colour=red,bw_size=1,bw_refill_time=1", "unknown key 'colour'"),
          ])
    func groupRefusals(text: String, expected: String) {
        let error = #expect(throws: ConfigError.self) { try RateLimitGroupConfig.parse(text) }
        #expect(error?.option == "--rate-limit-group")
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
    }

    @Test("A disk must name an existing group, group ids are unique, and a disk takes a group or its own limit")
    func validation() throws {
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: "/k")
        config.disks = [try DiskConfig.parse("path=/a,rate_limit_group=nowhere")]
        var error = #expect(throws: ConfigError.self) { try config.validate() }
        #expect(error?.description.contains("rate_limit_group=nowhere names no --rate-limit-group") == true)
        let group = try RateLimitGroupConfig.parse("id=g,bw_size=10,bw_refill_time=10")
        config.rateLimitGroups = [group, group]
        config.disks = []
        error = #expect(throws: ConfigError.self) { try config.validate() }
        #expect(error?.description.contains("given twice") == true)
        config.rateLimitGroups = [group]
        config.disks = [try DiskConfig.parse("path=/a,rate_limit_group=g,bw_size=5,bw_refill_time=5")]
        error = #expect(throws: ConfigError.self) { try config.validate() }
        #expect(error?.description.contains("not both") == true)
    }

    @Test("The binary refuses a disk naming an unknown group, with the reason")
    func binaryRefusal() throws {
        let run = try BinaryTests.run(["--kernel", "/nonexistent", "--disk", "path=/nonexistent.raw,rate_limit_group=g9",
                                       "--rate-limit-group", "id=g1,bw_size=1000,bw_refill_time=100"], timeout: 20)
        #expect(run.status != 0)
        #expect(run.stderr.contains("rate_limit_group=g9 names no --rate-limit-group"), "\(run.stderr)")
    }
}
