import Foundation
import Testing
@testable import VMM

@Suite("--net: Cloud Hypervisor's keys, defaults, JSON names and refusals")
struct NetConfigTests {
    @Test("Keys, defaults and JSON names")
    func parse() throws {
        let net = try NetConfig.parse("tap=tap3,mac=52:54:00:12:34:56,ip=192.168.249.1,mask=255.255.255.0,num_queues=4,queue_size=512,id=net0,host_mac=52:54:00:aa:bb:cc,mtu=1400")
        #expect(net.tap == "tap3" && net.mac == "52:54:00:12:34:56" && net.ip == "192.168.249.1" && net.mask == "255.255.255.0")
        #expect(net.numQueues == 4 && net.queueSize == 512 && net.id == "net0" && net.hostMac == "52:54:00:aa:bb:cc" && net.mtu == 1400)
        #expect(net.offloadTSO && net.offloadUFO && net.offloadCsum)
        try net.validate()
        let json = String(decoding: try JSONEncoder().encode(net), as: UTF8.self)
        for key in ["\"num_queues\":4", "\"queue_size\":512", "\"host_mac\":\"52:54:00:aa:bb:cc\"", "\"offload_tso\":true"] {
            #expect(json.contains(key), "\(json)")
        }
        let decoded = try JSONDecoder().decode(NetConfig.self, from: Data(#"{"tap":"t0"}"#.utf8))
        #expect(decoded == NetConfig(tap: "t0"))
        #expect(decoded.numQueues == 2 && decoded.queueSize == 256)
    }

    @Test("Empty values mean not given, as in Cloud Hypervisor's examples")
    func emptyValues() throws {
        let net = try NetConfig.parse("tap=,mac=,ip=,mask=")
        #expect(net == NetConfig())
        try net.validate()
    }

    @Test("fd= takes one descriptor per queue pair and sets num_queues")
    func fds() throws {
        let one = try NetConfig.parse("fd=3")
        #expect(one.fds == [3] && one.numQueues == 2)
        try one.validate()
        let two = try NetConfig.parse("fd=[3,4],mac=52:54:00:00:00:01")
        #expect(two.fds == [3, 4] && two.numQueues == 4)
        try two.validate()
    }

    @Test("Refusals name --net and what it accepts",
          arguments: [
            ("num_queues=3", "even number"),
            ("queue_size=100", "power of two"),
            ("mac=52:54:00:12:34", "not an Ethernet address"),
            ("mac=01:00:5e:00:00:01", "multicast"),
            ("ip=192.168.1", "not an IPv4 address"),
            ("ip=10.0.0.1,mask=255.0.255.0", "not an IPv4 netmask"),
            ("mask=255.255.255.0", "needs ip="),
            ("fd=[3,4],num_queues=2", "needs 1"),
            ("fd=3,tap=tap0", "either tap= or fd="),
            ("fd=x", "not a list of open descriptors"),
            ("tap=this-name-is-too-long", "not an interface name"),
            ("bw_size=1000", "bw_size= needs bw_refill_time="),
            ("ops_refill_time=10", "ops_refill_time= needs ops_size="),
            ("bw_one_time_burst=10", "bw_one_time_burst= needs bw_size="),
            ("bw_size=-1,bw_refill_time=10", "bw_size=-1 is not a whole number"),
            ("bw_size=10,bw_refill_time=100000000", "longer than a day"),
            ("colour=red", "unknown key 'colour'"),
          ])
    func errors(text: String, expected: String) {
        let error = #expect(throws: ConfigError.self) { try NetConfig.parse(text).validate() }
        #expect(error?.option == "--net")
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
    }

    @Test("Rate limiting: bw_* and ops_* make rate_limiter_config, with Cloud Hypervisor's JSON names")
    func rateLimiter() throws {
        let net = try NetConfig.parse("tap=t0,bw_size=1048576,bw_one_time_burst=2048,bw_refill_time=100,ops_size=50,ops_refill_time=10")
        try net.validate()
        let expected = RateLimiterConfig(bandwidth: TokenBucketConfig(size: 1_048_576, oneTimeBurst: 2048, refillTime: 100),
                                         ops: TokenBucketConfig(size: 50, refillTime: 10))
        #expect(net.rateLimiterConfig == expected)
        let json = String(decoding: try JSONEncoder().encode(net), as: UTF8.self)
        #expect(json.contains(#""rate_limiter_config":{"#) && json.contains(#""one_time_burst":2048"#) && json.contains(#""refill_time":100"#), "\(json)")
        let decoded = try JSONDecoder().decode(NetConfig.self, from: Data(#"{"tap":"t0","rate_limiter_config":{"ops":{"size":5,"refill_time":1000}}}"#.utf8))
        #expect(decoded.rateLimiterConfig == RateLimiterConfig(ops: TokenBucketConfig(size: 5, refillTime: 1000)))
        // Cloud Hypervisor reads a zero size or refill time as "no bucket".
        let zero = try NetConfig.parse("bw_size=0,bw_refill_time=0")
        #expect(zero.rateLimiterConfig?.makeLimiter().isUnlimited == true)
        #expect(try NetConfig.parse("bw_size=,bw_refill_time=").rateLimiterConfig == nil)
        let disk = try DiskConfig.parse("path=/d,bw_size=1000,bw_refill_time=1000")
        #expect(disk.rateLimiterConfig?.bandwidth == TokenBucketConfig(size: 1000, refillTime: 1000))
        #expect(disk.rateLimiterConfig?.makeLimiter().bandwidth?.tokensPerSecond == 1000)
        #expect(throws: ConfigError.self) { try DiskConfig.parse("path=/d,ops_size=3") }
    }

    @Test("Devices get ids _net0, _net1...; ids, interfaces and MACs must be unique")
    func ids() throws {
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: "/k")
        config.net = [NetConfig(tap: "a"), NetConfig(tap: "b")]
        #expect(config.netIDs == ["_net0", "_net1"])
        try config.validate()
        config.net![1].tap = "a"
        #expect(throws: ConfigError.self) { try config.validate() }
        config.net![1].tap = nil
        config.net![0].mac = "52:54:00:00:00:01"
        config.net![1].mac = "52:54:00:00:00:01"
        #expect(throws: ConfigError.self) { try config.validate() }
        config.net![1].mac = nil
        config.net![1].id = "_net0"
        #expect(throws: ConfigError.self) { try config.validate() }
        config.net![1].id = "root"
        config.disks = [DiskConfig(path: "/d")]
        config.disks![0].id = "root"
        #expect(throws: ConfigError.self) { try config.validate() }
    }
}
