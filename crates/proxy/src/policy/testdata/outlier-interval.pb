*
httpbindefaultÀ>"	peak-ewma:e(½
ratingsdefaultøF"	peak-ewma*|
ratings-good-0ratings-good127.0.0.1:20002"
appratings"
versionv1*,spif//e:fcluster.local/ns/default/sa/ratings*€
ratings-broken-0ratings-broken127.0.0.1:20003"
versionv0"
appratings*,spiffe://cluster.local/ns/default/sa/ratings:"
ÿÿÿÿÿÿÿÿÿÿÿÿ °ê(2"#
istio-systemall-unauthenticated