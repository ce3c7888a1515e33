// I/O throttling of a disk or a network device: Cloud Hypervisor's `rate_limiter_config`
// (JSON) and its `bw_*` / `ops_*` options of `--disk` and `--net`.

import RateLimiter

/// One token bucket, as Cloud Hypervisor's `TokenBucket` in the API.
public struct TokenBucketConfig: Codable, Equatable, Sendable {
    /// The capacity in tokens (bytes or operations).
    public var size: UInt64
    /// Extra tokens spent once, before the bucket's own.
    public var oneTimeBurst: UInt64?
    /// Milliseconds for an empty bucket to fill up.
    public var refillTime: UInt64

    /// A bucket of `size` tokens refilled in `refillTime` milliseconds.
    public init(size: UInt64, oneTimeBurst: UInt64? = nil, refillTime: UInt64) {
        self.size = size
        self.oneTimeBurst = oneTimeBurst
        self.refillTime = refillTime
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case size, oneTimeBurst = "one_time_burst", refillTime = "refill_time"
    }

    /// Decodes (unknown fields ignored: only the limiter object around it denies them).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        size = try c.decode(UInt64.self, forKey: .size)
        oneTimeBurst = try c.decodeIfPresent(UInt64.self, forKey: .oneTimeBurst)
        refillTime = try c.decode(UInt64.self, forKey: .refillTime)
    }

    /// The bucket's settings for ``RateLimiter``; `nil` when it limits nothing (a size or
    /// a refill time of 0, as Cloud Hypervisor reads them).
    var bucket: RateLimiter.Bucket? {
        guard size > 0, refillTime > 0 else { return nil }
        return RateLimiter.Bucket(size: size, oneTimeBurst: oneTimeBurst ?? 0, refillMilliseconds: refillTime)
    }
}

/// A rate limiter: a bandwidth bucket in bytes and an operations bucket, each optional
/// (Cloud Hypervisor's `RateLimiterConfig`).
public struct RateLimiterConfig: Codable, Equatable, Sendable {
    /// Bytes.
    public var bandwidth: TokenBucketConfig?
    /// Operations (requests, packets).
    public var ops: TokenBucketConfig?

    /// A limiter with the given buckets.
    public init(bandwidth: TokenBucketConfig? = nil, ops: TokenBucketConfig? = nil) {
        self.bandwidth = bandwidth
        self.ops = ops
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case bandwidth, ops }

    /// Decodes; unknown fields are refused, as Cloud Hypervisor's `deny_unknown_fields` does here.
    public init(from decoder: any Decoder) throws {
        try refuseUnknownKeys(in: decoder, known: CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bandwidth = try c.decodeIfPresent(TokenBucketConfig.self, forKey: .bandwidth)
        ops = try c.decodeIfPresent(TokenBucketConfig.self, forKey: .ops)
    }

    /// The option keys, as `--disk` and `--net` spell them.
    static let keys = ["bw_size", "bw_one_time_burst", "bw_refill_time", "ops_size", "ops_one_time_burst", "ops_refill_time"]

    /// The syntax of the keys, for the options' help.
    static let syntax = "bw_size=<bytes>,bw_one_time_burst=<bytes>,bw_refill_time=<ms>,ops_size=<io_ops>,ops_one_time_burst=<io_ops>,ops_refill_time=<ms>"

    /// Reads the `bw_*` and `ops_*` keys of `list`; `nil` when none is given (empty values
    /// count as not given). A size needs its refill time and the other way round.
    static func parse(_ list: OptionList, option: String) throws(ConfigError) -> RateLimiterConfig? {
        func number(_ key: String) throws(ConfigError) -> UInt64? {
            guard let text = list[key], !text.isEmpty else { return nil }
            return try list.integer(key, as: UInt64.self)
        }
        func bucket(_ prefix: String) throws(ConfigError) -> TokenBucketConfig? {
            let size = try number("\(prefix)_size"), burst = try number("\(prefix)_one_time_burst")
            let refill = try number("\(prefix)_refill_time")
            switch (size, refill) {
            case (nil, nil):
                if burst != nil { throw ConfigError(option: option, "\(prefix)_one_time_burst= needs \(prefix)_size= and \(prefix)_refill_time=") }
                return nil
            case (_?, nil):
                throw ConfigError(option: option, "\(prefix)_size= needs \(prefix)_refill_time= (milliseconds to refill the bucket)")
            case (nil, _?):
                throw ConfigError(option: option, "\(prefix)_refill_time= needs \(prefix)_size= (the bucket's capacity)")
            case let (size?, refill?):
                return TokenBucketConfig(size: size, oneTimeBurst: burst, refillTime: refill)
            }
        }
        let config = RateLimiterConfig(bandwidth: try bucket("bw"), ops: try bucket("ops"))
        return config.bandwidth == nil && config.ops == nil ? nil : config
    }

    /// Refuses refill times beyond a day and sizes that do not fit a signed 64-bit count,
    /// naming `option`.
    func validate(option: String) throws(ConfigError) {
        for (name, bucket) in [("bandwidth", bandwidth), ("ops", ops)] {
            guard let bucket else { continue }
            if bucket.refillTime > 86_400_000 {
                throw ConfigError(option: option, "rate_limiter_config.\(name).refill_time=\(bucket.refillTime) ms is longer than a day")
            }
            if bucket.size > UInt64(Int64.max / 4) || (bucket.oneTimeBurst ?? 0) > UInt64(Int64.max / 4) {
                throw ConfigError(option: option, "rate_limiter_config.\(name): size and one_time_burst must be below 2^61")
            }
        }
    }

    /// A new limiter with these buckets.
    public func makeLimiter() -> RateLimiter {
        RateLimiter(bandwidth: bandwidth?.bucket, operations: ops?.bucket)
    }
}

/// One `--rate-limit-group`: a rate limit shared by every disk that names it with
/// `rate_limit_group=` (Cloud Hypervisor's `RateLimitGroupConfig`).
public struct RateLimitGroupConfig: Codable, Equatable, Sendable {
    /// The group's name, which disks give as `rate_limit_group=`.
    public var id: String
    /// The limit the group's disks share.
    public var rateLimiterConfig: RateLimiterConfig

    /// A group named `id`.
    public init(id: String, rateLimiterConfig: RateLimiterConfig) {
        self.id = id
        self.rateLimiterConfig = rateLimiterConfig
    }

    enum CodingKeys: String, CodingKey {
        case id, rateLimiterConfig = "rate_limiter_config"
    }

    /// The accepted `--rate-limit-group` syntax.
    public static let syntax = "\(RateLimiterConfig.syntax),id=<group_id>"

    /// Parses one `--rate-limit-group` value (for example `bw_size=1048576,bw_refill_time=1000,id=group0`).
    public static func parse(_ text: String) throws(ConfigError) -> RateLimitGroupConfig {
        let option = "--rate-limit-group"
        let list = try OptionList(text, option: option, knownKeys: RateLimiterConfig.keys + ["id"])
        guard let id = list["id"], !id.isEmpty else { throw ConfigError(option: option, "id= is required: \(syntax)") }
        guard let limits = try RateLimiterConfig.parse(list, option: option) else {
            throw ConfigError(option: option, "group \(id) sets no limit; give bw_size= and bw_refill_time=, or ops_size= and ops_refill_time=")
        }
        return RateLimitGroupConfig(id: id, rateLimiterConfig: limits)
    }
}
